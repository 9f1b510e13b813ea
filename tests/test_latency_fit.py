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
    # --max-mflops binds: the profile's pick is timed, measured within the device's latency
    # budget, and the next phi is over the MACs budget, so nothing else is timed; candidates
    # over --max-mflops never are (the search never times a network it could not choose)
    assert d["measure"]["timed"] == 1 <= d["measure"]["bound"]
    assert d["measure"]["pick_p10_ms"] <= d["latency_ms"] <= d["measure"]["pick_p90_ms"]
    over = [c for c in d["candidates"] if c["mflops"] > 40]
    assert over
    assert all(c["latency_source"] == "model" and c["latency_ms"] == c["latency_predicted_ms"] for c in over)
    assert "timed 1 candidate (at most" in r.stderr and "p90/p10" in r.stderr
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


# --------------------------------------------------------------------------- bounded fit --measure


class _FakeTimer:
    """A device whose measured latency is the profile's prediction times ``factor`` (and whose
    frames spread +-``spread``): the search logic without a runtime. ``clock`` advances by
    ``cost_s`` per timing."""

    def __init__(self, device, factor=1.3, spread=0.02, cost_s=1.0):
        self.device, self.factor, self.spread, self.cost_s = device, factor, spread, cost_s
        self.cache, self.now = {}, 0.0

    def latency(self, spec):
        return self.device.latency_ms(spec) * self.factor

    def cached(self, spec):
        return self.cache.get(spec.name)

    def timing(self, spec, budget_s=None):
        from edgeeff.core.latency import Timing

        m = self.latency(spec)
        self.now += self.cost_s
        t = Timing(m, m * (1 - self.spread), m * (1 + self.spread), 15, self.cost_s)
        self.cache[spec.name] = t
        return t


def _search(device_name="pi4", max_latency=60.0, budget_s=1e9, **kw):
    from edgeeff.core import budget, fit, targets

    dev = targets.load(device_name)
    fake = _FakeTimer(dev, **kw)
    m = budget.BudgetedMeasure(fake, budget_s, clock=lambda: fake.now)
    b = budget.Budgets.for_device(dev, None, None, None, max_latency)
    return fit.fit(dev, b, family="lite", num_classes=10, measure=m), m, fake


def test_measured_search_times_few_candidates_and_finds_the_measured_boundary():
    from edgeeff.core.fit import PHI_STEP

    res, m, fake = _search(factor=1.3)
    s = m.summary(res.chosen.spec)
    assert 1 <= s.timed <= m.bound <= 25 and not s.stopped
    # the pick is measured to fit and the next grid step (another network) is measured over
    assert res.chosen.latency_source == "measured" and res.chosen.latency_ms <= 60.0
    from edgeeff.core.arch import phi_spec

    nxt = phi_spec(round(res.chosen.spec.phi + PHI_STEP, 2), "lite", 10)
    assert fake.latency(nxt) > 60.0 or SpecTimer_key_same(res.chosen.spec, nxt)
    # the model alone (factor 1.3 off) would have picked a larger network
    assert res.binding == "latency"
    # neighbours not timed during the search keep the prediction and are not timed after it
    assert len(fake.cache) == s.timed
    assert any(c.latency_source == "model" for c in res.neighbours)


def SpecTimer_key_same(a, b):
    from edgeeff.core.cost import cost

    return cost(a) == cost(b)


def test_measured_search_reaches_the_top_of_the_range_when_nothing_binds():
    # a device far faster than its profile: no budget stops phi, and the search says so
    from edgeeff.core.fit import PHI_MAX

    res, m, _ = _search(factor=1e-4)
    assert res.chosen.spec.phi == PHI_MAX and res.chosen.latency_source == "measured"
    assert res.binding.startswith("none (phi reached the top") and not m.summary().stopped


def test_measured_search_is_stopped_by_its_time_budget():
    res, m, fake = _search(factor=0.5, budget_s=2.5, cost_s=1.0)
    s = m.summary(res.chosen.spec)
    assert s.timed == 3 and "time budget" in s.stopped
    assert res.chosen.latency_ms <= 60.0  # still a candidate measured to fit
    assert "stopped by the 2.5 s time budget" in s.line()


def test_measured_search_without_a_latency_budget_times_only_the_pick():
    from edgeeff.core import budget, fit, targets

    dev = targets.load("pi4")
    fake = _FakeTimer(dev)
    m = budget.BudgetedMeasure(fake, 100, clock=lambda: fake.now)
    res = fit.fit(dev, budget.Budgets.for_device(dev, 60, None, None, None), family="lite",
                  num_classes=10, measure=m)
    assert m.summary().timed == 1 and res.chosen.latency_source == "measured"


def test_spread_line_and_the_warning_when_the_last_two_cannot_be_told_apart():
    res, m, _ = _search(factor=1.3, spread=0.0)
    s = m.summary(res.chosen.spec)
    assert not s.warning
    assert f"timed {s.timed} candidate" in s.line() and "(p90/p10) 0%..0%" in s.line()
    res, m, _ = _search(factor=1.3, spread=0.25)
    s = m.summary(res.chosen.spec)
    assert "cannot decide" in s.warning and "p10..p90" in s.warning

"""``edgeeff profile`` and the per-op latency model: the profile it writes is a device profile
``fit`` accepts, the model predicts the graphs it was fitted on, the TOML round-trips, and the
command runs with only the runtime tier (TensorFlow, Keras and ONNX blocked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core import latency, targets
from edgeeff.core.arch import ModelSpec, phi_spec, preset_spec
from edgeeff.core.cost import cost as cost_of
from edgeeff.core.data import data_dir
from edgeeff.core.graph import graph
from tests.conftest import run_cli
from tests.test_layers import BLOCKER

BLOCKED = "tensorflow,keras,tf_keras,onnx,onnx2tf,onnxruntime,cv2"


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory):
    """``edgeeff profile --quick`` run once, as a user would, with TensorFlow & co. blocked."""
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert ([runtime])")
    d = tmp_path_factory.mktemp("profile")
    out = d / "my-device.toml"
    r = subprocess.run([sys.executable, "-c", BLOCKER, BLOCKED, "profile", "--quick",
                        "--threads", "1", "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=180, cwd=d)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, json.loads(r.stdout)


def test_quick_profile_writes_a_profile_fit_accepts(quick_profile, tmp_path):
    path, summary = quick_profile
    # counts, not wall time (a shared machine's speed is not the command's to promise)
    assert summary["graphs_timed"] >= 40 and summary["time_budget_s"] > 0
    dev = targets.load(str(path))
    assert dev.latency_model is not None and dev.latency_model.threads == 1
    assert dev.int8_macs_per_s > 0 and "edgeeff profile" in dev.sources["throughput"]
    assert "edgeeff profile" in dev.sources["latency"]
    r = subprocess.run([sys.executable, "-c", BLOCKER, BLOCKED + ",ai_edge_litert", "fit",
                        "--device", str(path), "--max-mflops", "400", "--json",
                        "--out", str(tmp_path / "s.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    res = json.loads(r.stdout)
    assert res["device"] == "my-device" and res["latency_ms"] > 0


def test_profile_model_predicts_its_own_training_graphs(quick_profile):
    """The per-op model, cross-validated on the graphs the same run timed: a check of the fit
    on one session's measurements, not a second timing taken minutes later on a machine
    whose speed may have changed in between (benchmarks/latency_model.py does that)."""
    _, summary = quick_profile
    assert summary["cv_median_abs_error"] is not None
    assert summary["cv_median_abs_error"] < 0.35, summary


def test_profile_command_refuses_to_overwrite(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "dev.toml"
    out.write_text("x")
    r = run_cli("profile", "--quick", "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and out.read_text() == "x"


# --------------------------------------------------------------------------- pure: no runtime


def _fitted_model(seed: int = 0):
    """A model fitted to latencies made by known coefficients (no runtime needed)."""
    from edgeeff.device.profile import design_specs

    specs = design_specs(40)
    cols = latency.columns()
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.2, 1.0, len(cols)) * (rng.random(len(cols)) < 0.7)
    rows = np.array([latency.row(s) for s in specs])
    ms = rows @ truth
    return specs, ms, latency.from_timings(specs, ms, ridge=0.0, threads=2,
                                           runtime="ai_edge_litert", runtime_version="2.3.0",
                                           cpu="test CPU")


def test_nnls_matches_a_projected_gradient_solution():
    rng = np.random.default_rng(1)
    A = rng.random((60, 12))
    b = rng.normal(size=60) + 1.0
    x = latency.nnls(A, b)
    assert (x >= 0).all()
    y = np.zeros(12)
    step = 1.0 / np.linalg.norm(A, 2) ** 2
    for _ in range(50000):
        y = np.maximum(0.0, y - step * (A.T @ (A @ y - b)))
    assert np.linalg.norm(A @ x - b) <= np.linalg.norm(A @ y - b) + 1e-6


def test_fit_recovers_exact_latencies():
    specs, ms, model = _fitted_model()
    err = latency.errors(model, specs, ms)
    assert np.abs(err).max() < 1e-3


def test_op_types_cover_both_families():
    lite = [latency.op_type(graph(preset_spec("lite0")), i)
            for i in range(len(graph(preset_spec("lite0")).ops))]
    g = graph(preset_spec("b0"))
    eff = [latency.op_type(g, i) for i in range(len(g.ops))]
    assert lite.count("CONV_2D_KxK") == 1 and "CONV_2D_SE" not in lite and "MUL" not in lite
    assert {"DEPTHWISE_CONV_2D_3x3", "DEPTHWISE_CONV_2D_5x5", "CONV_2D_1x1", "ADD", "MEAN",
            "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"} <= set(lite)
    assert eff.count("CONV_2D_SE") == 2 * 16 and eff.count("MUL_BCAST") == 16
    assert eff.count("MUL_CONST") == eff.count("ADD_CONST") == 1
    assert set(eff) <= set(latency.OP_TYPES)


def test_latency_table_round_trips_through_toml():
    specs, ms, model = _fitted_model(3)
    model = latency.LatencyModel(model.coefficients, 2.5e-5, 2, "ai_edge_litert", "2.3.0",
                                 'EPYC "x", 2 cores', validation={"within_10pct": 0.95, "n": 44,
                                                                  "method": "5-fold"})
    prof = {"name": "bench box", "kind": "sbc", "ram": "512MB", "flash": "256MB",
            "int8_macs_per_s": 1.5e10, "family": "lite", "formats": ["tflite"],
            "sources": {"ram": "r", "flash": "f", "throughput": "t", "latency": "measured"},
            "latency": model.to_toml_dict()}
    text = targets.dumps(prof)
    dev = targets.parse_profile(text, "box", "box.toml")
    back = dev.latency_model
    assert back.threads == 2 and back.cpu == model.cpu and back.validation["n"] == 44
    assert back.graph_s == pytest.approx(model.graph_s)
    for s in specs[:10] + [preset_spec("b0"), phi_spec(-5, "lite", 10)]:
        assert back.predict_ms(s) == pytest.approx(model.predict_ms(s), rel=1e-5)
        assert dev.latency_ms(s) == pytest.approx(model.predict_ms(s), rel=1e-5)
    # and again: dumping the parsed model gives the same text
    assert targets.dumps({**prof, "latency": back.to_toml_dict()}) == text


def test_device_latency_falls_back_to_macs_without_a_model():
    from dataclasses import replace

    dev = replace(targets.load("pi4"), latency_model=None)
    spec = ModelSpec(family="lite", width=1.0, depth=1.0, resolution=224)
    macs = sum(op.macs for op in graph(spec).ops)
    assert dev.latency_ms(spec) == pytest.approx(1000 * macs / dev.int8_macs_per_s)
    assert dev.latency_ms(macs) == dev.latency_ms(spec)
    assert dev.latency_is_estimate and dev.latency_basis == "MACs / int8_macs_per_s"


def test_bundled_profiles_carry_per_op_tables_labelled_estimates():
    """tools/make_bundled_latency.py: CPU boards get a measured per-op shape scaled to their
    throughput estimate at Lite0; MCUs and Corals MACs only, in the same form."""
    lite0, b0 = preset_spec("lite0"), preset_spec("b0")
    mark = "written by tools/make_bundled_latency.py"
    for dev in targets.load_all():
        # a table of its own (the phones: published figures) is not the tool's
        if mark not in (data_dir("targets") / f"{dev.key}.toml").read_text():
            assert "published" in dev.latency_model.estimate, dev.key
            continue
        m = dev.latency_model
        assert m is not None and m.estimate and dev.latency_is_estimate, dev.key
        assert "not measured on this board" in dev.latency_basis
        if m.runtime == "tflite-micro":  # counted instructions x a calibrated CPI (issue 35,
            assert "QEMU -icount" in dev.latency_basis, dev.key  # tests/test_mcu_latency.py)
            continue
        flat = dev.latency_ms(cost_of(lite0).macs)  # MACs / int8_macs_per_s
        assert dev.latency_ms(lite0) == pytest.approx(flat, rel=1e-3), dev.key
        per_mac_b0 = dev.latency_ms(b0) / cost_of(b0).macs
        per_mac_lite0 = dev.latency_ms(lite0) / cost_of(lite0).macs
        if dev.kind in ("sbc", "phone"):  # squeeze-excite and swish: dearer per MAC than lite
            assert m.threads and per_mac_b0 > 1.3 * per_mac_lite0, dev.key
            assert "DEPTHWISE_CONV_2D_3x3" in m.coefficients and m.graph_s >= 0
        else:  # MACs only: the flat estimate for any spec
            assert per_mac_b0 == pytest.approx(per_mac_lite0, rel=5e-3), dev.key
            assert {f for c in m.coefficients.values() for f in c} <= {"macs", "weight_bytes"}
    r = run_cli("devices", "--json")
    assert r.returncode == 0 and all(d["latency_estimate"] for d in json.loads(r.stdout))
    # and they are exactly what the tool derives from the committed measured profile
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "tools" / "make_bundled_latency.py"),
                        "--measured", str(root / "tools" / "data" / "x86-64-1thread.toml"),
                        "--check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("0 file(s) to change"), r.stdout


def test_fit_prints_profile_strings_verbatim(tmp_path):
    """The latency basis quotes the profile (runtime, version): text in brackets is shown as
    written, not taken for console markup (it once ate '[latency]')."""
    _, _, model = _fitted_model(3)
    model = latency.LatencyModel(model.coefficients, 2.5e-5, 2, "ai_edge_litert",
                                 "2.3.0 [custom build]", "box")
    prof = {"name": "bench box", "kind": "sbc", "ram": "512MB", "flash": "256MB",
            "int8_macs_per_s": 1.5e10, "family": "lite", "formats": ["tflite"],
            "sources": {"ram": "r", "flash": "f", "throughput": "t", "latency": "measured"},
            "latency": model.to_toml_dict()}
    (tmp_path / "box.toml").write_text(targets.dumps(prof))
    r = run_cli("fit", "--device", str(tmp_path / "box.toml"), "--max-mflops", "50",
                "--out", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    assert "2.3.0 [custom build], 2 threads" in " ".join(r.stdout.split())


# --------------------------------------------------------------------------- thread cap, settle


def test_cap_threads_caps_requests_above_the_usable_cores():
    from edgeeff.device.profile.host import cap_threads

    threads, note = cap_threads(4, cores=2)
    assert threads == 2
    assert note.startswith("timing with 2 threads, not 4: this machine runs 2 at once")
    threads, note = cap_threads(3, cores=1)
    assert threads == 1 and note.startswith("timing with 1 thread, not 3")
    assert "\n" not in note


def test_cap_threads_leaves_requests_at_or_below_the_cores_alone():
    from edgeeff.device.profile.host import cap_threads, usable_cores

    assert cap_threads(2, cores=2) == (2, None)
    assert cap_threads(1, cores=4) == (1, None)
    assert cap_threads(None, cores=1) == (None, None)  # the runtime's default is left alone
    n = usable_cores()
    assert cap_threads(n) == (n, None)
    assert cap_threads(n + 3)[0] == n


def test_profile_timing_is_the_wall_clock_p50_bench_reports_not_a_net_time():
    """The profile predicts what ``edgeeff bench`` shows a user: the wall-clock p50 of the
    frames. Run-queue waits (other work on the machine) are reported as a share, never
    subtracted (subtracting them made predictions low by the busy share)."""
    from edgeeff.core.latency import BUSY_SHARE, Timing
    from edgeeff.device.profile.timing import wait_ms

    # recorded under background load: some frames waited for a CPU
    wall = [5.2, 9.8, 5.3, 12.1, 5.1]
    waits = [0.1, 4.6, 0.05, 6.8, 0.05]
    t = Timing.of(wall, 1.0, waits)
    assert t.p50_ms == float(np.percentile(wall, 50)) == 5.3  # bench's p50, not 5.2 net
    assert (t.p10_ms, t.p90_ms) == (float(np.percentile(wall, 10)), float(np.percentile(wall, 90)))
    assert t.runqueue_share == pytest.approx(sum(waits) / sum(wall)) and t.busy
    assert t.runqueue_share > BUSY_SHARE
    assert not Timing.of([5.0, 5.1], 0.1, [0.0, 0.01]).busy
    # the longest thread's wait, ms; threads that came or went (-1) are left out
    assert wait_ms([0, 1_000_000], [4_000_000, 2_000_000]) == pytest.approx(4.0)
    assert wait_ms([-1, 0], [50_000_000, 0]) == 0.0


def test_profile_times_the_same_frame_bench_times(tmp_path):
    """``Timer.step`` (profile, fit --measure) makes the interpreter calls that
    ``Classifier.invoke`` (``edgeeff bench``) makes for one frame: input copied in, invoke,
    scores read out. Timing the bare invoke left the copies out, which is most of the
    difference on small models."""
    pytest.importorskip("ai_edge_litert")
    from edgeeff.device import synth
    from edgeeff.device.profile.timing import Timer
    from edgeeff.device.runtime import Classifier

    class Recorder:
        def __init__(self, it):
            self.it, self.calls = it, []

        def __getattr__(self, name):
            f = getattr(self.it, name)
            if name in ("set_tensor", "invoke", "get_tensor"):
                def rec(*a, **k):
                    self.calls.append(name)
                    return f(*a, **k)
                return rec
            return f

    model = synth.build(phi_spec(-8, "lite", 10))
    path = tmp_path / "m.tflite"
    path.write_bytes(model)
    clf = Classifier(path, num_threads=1)
    clf.interpreter = Recorder(clf.interpreter)
    clf.invoke()
    t = Timer(model, 1, warmup=1)
    t.it = Recorder(t.it)
    t.step()
    assert t.it.calls == clf.interpreter.calls == ["set_tensor", "invoke", "get_tensor"]
    # the same input: bench's seeded pixels
    rng = np.random.default_rng(0)
    assert np.array_equal(t.input, rng.integers(0, 256, t.input.shape, dtype=np.uint8))


def test_a_profile_taken_on_a_busy_machine_says_so():
    """Run-queue waits above 10 % of the wall time: the profile records the share and a busy
    flag, its latency source says so, and the command's warning line names it; a quiet run
    has none of that."""
    from edgeeff.device import profile as prof

    probes = [p for p in prof.design(quick=True)][:12]
    rng = np.random.default_rng(0)
    for share, busy in ((0.4, True), (0.01, False)):
        ms = [prof.Measurement(p, m, m, 1.0, share, 0.05) for p, m in
              zip(probes, rng.uniform(1, 10, len(probes)))]
        res = prof.solve_measurements(ms, 1, folds=3)
        v = res.model.validation
        assert v["busy"] is busy and v["runqueue_share"] == pytest.approx(share)
        note = prof.busy_note(res)
        src = prof.device_profile(res, "x")["sources"]["latency"]
        if busy:
            assert "busy" in note and "40%" in note and "busy" in src and "40%" in src
        else:
            assert note is None and "busy" not in src
        assert "wall-clock p50" in src

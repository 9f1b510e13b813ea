"""Time the design and fit the per-op latency model to it: drift correction against a fixed
reference graph, a timing budget and deadline, and the cross-validated error of the fit."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from edgeeff.core import latency
from edgeeff.device import synth
from edgeeff.device.profile.design import REFERENCE, Probe, design
from edgeeff.device.profile.host import cap_threads, cpu_model, usable_cores
from edgeeff.device.profile.timing import Timer, time_model_stats
from edgeeff.device.runtime import runtime_info


@dataclass
class Measurement:
    probe: Probe
    ms: float  # drift-corrected latency
    raw_ms: float = 0.0  # as measured: wall-clock p50 of its frames
    reference_ms: float = 0.0  # the reference graph, timed right after
    runqueue_share: float = 0.0  # share of the wall time spent waiting for a CPU
    spread: float = 0.0  # p90 / p10 - 1 of its frames


@dataclass
class ProfileResult:
    model: latency.LatencyModel
    measurements: list[Measurement]
    int8_macs_per_s: float
    threads: int | None
    wall_s: float = 0.0
    cv_errors: np.ndarray | None = None  # out-of-fold relative error of each measurement
    threads_note: str | None = None  # set when the threads asked for were capped at the cores

    @property
    def spread(self) -> tuple[float, float]:
        """p10 and p90, over the graphs, of each one's frame spread (p90/p10 - 1)."""
        s = [m.spread for m in self.measurements] or [0.0]
        return (round(float(np.percentile(s, 10)), 4), round(float(np.percentile(s, 90)), 4))

    @property
    def reference_ms(self) -> float:
        """The drift reference graph's median time during the run (0 without one)."""
        refs = [m.reference_ms for m in self.measurements if m.reference_ms > 0]
        return float(np.median(refs)) if refs else 0.0


class Drift:
    """A small reference graph timed after every probe: each probe's latency is scaled by
    (median reference time / reference time now), which cancels slow changes in the machine's
    speed (clock, thermal throttling, other work) over the run. Constant on a steady device."""

    def __init__(self, threads: int | None):
        self.timer = Timer(synth.build(REFERENCE, metadata=False), threads)
        self.times: list[float] = []

    def now(self, runs: int = 5) -> float:
        t = float(np.median(self.timer.run(runs)))
        self.times.append(t)
        return t

    def close(self) -> None:
        self.timer.close()


def measure(probes: list[Probe], threads: int | None, budget_s: float, log=None,
            drift: bool = True, runs: int = 40, deadline_s: float | None = None,
            reference_ms: float | None = None) -> list[Measurement]:
    """Time every probe (synthesised on the fly, one interpreter at a time) within about
    ``budget_s`` seconds of timing; probes left when ``deadline_s`` has passed are skipped.

    Drift correction scales every probe to the reference graph's median time over this run,
    or to ``reference_ms`` (e.g. a profile's own level, to compare measurements taken at
    another time with its predictions)."""
    start = time.perf_counter()
    ref = Drift(threads) if drift else None
    out = []
    per = budget_s / max(len(probes), 1)
    try:
        for k, p in enumerate(probes):
            if deadline_s is not None and time.perf_counter() - start > deadline_s:
                if log:
                    log(k, len(probes), None, 0.0)
                break
            t0 = time.perf_counter()
            model = synth.build(p.spec, n_ops=p.n_ops, metadata=False)
            left = per - (time.perf_counter() - t0)
            t = time_model_stats(model, threads, runs=runs, warmup=2,
                                 budget_s=max(left, 0.0))
            ms = t.p50_ms
            del model
            r = ref.now(3) if ref else 1.0
            out.append(Measurement(p, ms, ms, r, t.runqueue_share, t.spread))
            if log:
                log(k + 1, len(probes), p, ms)
        if ref and ref.times:
            med = reference_ms or float(np.median(ref.times))
            for m in out:
                m.ms = m.raw_ms * med / m.reference_ms
    finally:
        if ref:
            ref.close()
    return out


def solve_measurements(ms: list[Measurement], threads: int | None, folds: int = 5,
                     ridge: float = 1e-3) -> ProfileResult:
    """The latency model of the measurements, with its cross-validated error."""
    name, ver = runtime_info()
    rows = np.array([latency.row(m.probe.graph()) for m in ms])
    y = np.array([m.ms for m in ms])
    groups = np.array([m.probe.group for m in ms])
    whole = np.array([m.probe.n_ops is None for m in ms])
    err = latency.cross_validate(rows, y, groups, folds=folds, ridge=ridge)
    cv = latency.summarize(err[whole])
    cv.update(method=f"{folds}-fold cross-validation over the design's specs, whole graphs",
              design_graphs=int(len(ms)),
              statistic="wall-clock p50 of frames as edgeeff bench times them, drift-corrected")
    shares = [m.runqueue_share for m in ms]
    if shares:
        cv["runqueue_share"] = round(float(np.median(shares)), 4)
        cv["busy"] = bool(np.median(shares) > latency.BUSY_SHARE)
    refs = [m.reference_ms for m in ms if m.reference_ms > 0]
    if refs:
        cv["reference_ms"] = round(float(np.median(refs)), 4)
        cv["reference_spread"] = round(float(np.percentile(refs, 90) / np.percentile(refs, 10))
                                       - 1.0, 4)
        cv["reference_graph"] = REFERENCE.name
    model = latency.from_solution(latency.solve(rows, y, ridge), threads=threads, runtime=name,
                                  runtime_version=ver, cpu=cpu_model(), validation=cv)
    macs = np.array([sum(op.macs for op in m.probe.graph().ops) for m in ms])
    rate = float(np.median(macs[whole] / (y[whole] / 1000.0)))
    return ProfileResult(model, ms, rate, threads, cv_errors=err)


BUDGET_S = {"quick": 12.0, "full": 110.0}  # timing budget (synthesis comes on top)
DEADLINE_S = {"quick": 25.0, "full": 170.0}  # no new probe after this


def profile(threads: int | None = 2, quick: bool = False, budget_s: float | None = None,
            log=None) -> ProfileResult:
    """Time the design on this device and fit the per-op latency model. ``threads`` is capped
    at the cores this process may use (``threads_note`` of the result says so)."""
    t0 = time.perf_counter()
    threads, note = cap_threads(threads)
    probes = design(quick)
    mode = "quick" if quick else "full"
    budget = budget_s if budget_s is not None else BUDGET_S[mode]
    deadline = DEADLINE_S[mode] * budget / BUDGET_S[mode]
    ms = measure(probes, threads, budget, log, deadline_s=deadline)
    res = solve_measurements(ms, threads)
    res.wall_s = time.perf_counter() - t0
    res.threads_note = note
    return res


def noise_warning(res: ProfileResult) -> str | None:
    """A hint when the measurements look disturbed: the reference graph's time varied by more
    than 20 % (90th over 10th percentile) during the run, or cross-validation is poor."""
    v = res.model.validation
    spread, cv = v.get("reference_spread", 0.0), v.get("within_10pct", 1.0)
    if spread <= 0.20 and cv >= 0.5:
        return None
    load = ""
    if hasattr(os, "getloadavg"):
        load = f"; load average {os.getloadavg()[0]:.1f} on {usable_cores()} cores"
    return (f"the timings look disturbed (a fixed reference graph varied by {spread:.0%} "
            f"during the run, {cv:.0%} of the design predicted within +-10 % in "
            f"cross-validation{load}). Profile again with the device otherwise idle, or with "
            "fewer --threads than it has cores.")


def busy_note(res: ProfileResult) -> str | None:
    """One line when the machine was busy while profiling: the interpreter's threads waited
    for a CPU for more than :data:`~edgeeff.core.latency.BUSY_SHARE` of the wall time. The
    figures include those waits (they are what a user on that machine saw); on an idle
    device the same graphs run faster."""
    v = res.model.validation
    if not v.get("busy"):
        return None
    return (f"the machine was busy while profiling: the interpreter's threads waited for a "
            f"CPU {v.get('runqueue_share', 0):.0%} of the time (median over the graphs); the "
            "latencies include those waits. Profile again on an idle device for its own speed.")

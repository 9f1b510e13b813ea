"""Predicted vs measured int8 latency on this machine, for random specs the profile never saw.

1. ``edgeeff profile`` (in-process, the full design; or ``--profile FILE`` to use one written
   before) fits the per-op model;
2. ``--n`` random held-out specs (both families, 20 M - 2 G MACs, 10 and 1000 classes, half
   compound-scaled phi, half independent width/depth/resolution; a different generator from
   the profile's Halton design) are synthesised and timed ``--reps`` times, in passes over the
   whole set (so a busy spell on the machine hits one pass, not one spec), median per spec;
3. the table: measured, predicted, relative error, and the flat ``MACs / int8_macs_per_s``
   estimate for comparison; the share within +-10 % and the median error.

Held-out timings are drift-scaled to the profile's level: the reference graph timed after each
of them is compared with its median time while profiling (printed; a shared machine's speed
changes by several per cent from one minute to the next). The unscaled result is printed too.

Timing is the profile's: each invoke's wall time minus the time the interpreter's threads spent
waiting for a CPU (``/proc/self/task/*/schedstat``), median of the invokes, drift-corrected
against a reference graph. On a shared machine only single-thread figures are reproducible
(with two threads on two busy cores the threads wait for each other as well as for a CPU, which
no per-thread accounting removes), hence ``--threads 1`` by default here; on a quiet device use
the thread count the application runs with.

Usage: python benchmarks/latency_model.py [--threads N] [--n 24] [--reps 3] [--profile FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeeff.core import latency, targets  # noqa: E402
from edgeeff.core.cost import cost  # noqa: E402
from edgeeff.device import profile  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=24, help="held-out specs")
    ap.add_argument("--reps", type=int, default=3, help="timing passes over the held-out set")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--profile", help="use this profile TOML instead of profiling now")
    ap.add_argument("--quick", action="store_true", help="profile with --quick's design")
    a = ap.parse_args(argv)

    if a.profile:
        dev = targets.load(a.profile)
        model, rate = dev.latency_model, dev.int8_macs_per_s
        level = model.validation.get("reference_ms")
        print(f"profile {a.profile}: {model.runtime} {model.runtime_version}, "
              f"{model.threads} threads, {model.cpu}")
        if model.threads != a.threads:
            print(f"warning: the profile was measured with {model.threads} threads, timing "
                  f"with {a.threads}")
    else:
        t0 = time.perf_counter()
        res = profile.profile(threads=a.threads, quick=a.quick)
        model, rate = res.model, res.int8_macs_per_s
        level = res.reference_ms
        v = model.validation
        print(f"profile: {len(res.measurements)} graphs in {time.perf_counter() - t0:.0f} s "
              f"({a.threads} thread{'s' if a.threads > 1 else ''}, {model.runtime} "
              f"{model.runtime_version}, {model.cpu}); cross-validated "
              f"{v['within_10pct']:.0%} within +-10 %, median error {v['median_abs_error']:.1%}")
        design = {(m.probe.spec.family, m.probe.spec.width, m.probe.spec.depth,
                   m.probe.spec.resolution) for m in res.measurements}
    specs = profile.random_specs(a.n, a.seed)
    if not a.profile:
        assert not any((s.family, s.width, s.depth, s.resolution) in design for s in specs)
    probes = [profile.Probe(s, None, i) for i, s in enumerate(specs)]
    passes = [profile.measure(probes, a.threads, 45.0, reference_ms=level)
              for _ in range(a.reps)]
    reps = np.array([[m.ms for m in p] for p in passes])
    raw = np.median(np.array([[m.raw_ms for m in p] for p in passes]), axis=0)
    measured = np.median(reps, axis=0)
    if level:
        now = np.median([m.reference_ms for p in passes for m in p])
        print(f"reference graph ({profile.REFERENCE.name}): {level:.3f} ms while profiling, "
              f"{now:.3f} ms during the held-out passes: measurements scaled by "
              f"{level / now:.3f} to the profile's level")
    pred = np.array([model.predict_ms(s) for s in specs])
    flat = np.array([1000 * cost(s).macs / rate for s in specs])
    err, ferr = pred / measured - 1, flat / measured - 1
    spread = np.max(np.abs(reps / measured - 1), axis=0)

    print(f"\n{'#':>2} {'spec':<40} {'cls':>4} {'MACs':>6} {'measured':>9} {'+-':>5} "
          f"{'predicted':>9} {'error':>7} {'MACs-only':>9}")
    for i, s in enumerate(specs):
        print(f"{i + 1:>2} {s.name:<40} {s.num_classes:>4} {cost(s).macs / 1e6:>5.0f}M "
              f"{measured[i]:>8.3f}  {spread[i]:>4.0%} {pred[i]:>9.3f} {err[i]:>+7.1%} "
              f"{ferr[i]:>+9.1%}")
    s, f = latency.summarize(err), latency.summarize(ferr)
    print(f"\nper-op model: {s['within_10pct']:.0%} of {s['n']} held-out specs within +-10 %, "
          f"median |error| {s['median_abs_error']:.1%}, max {s['max_abs_error']:.1%}")
    print(f"MACs only:    {f['within_10pct']:.0%} within +-10 %, median |error| "
          f"{f['median_abs_error']:.1%}, max {f['max_abs_error']:.1%}")
    r = latency.summarize(pred / raw - 1)
    print(f"without the drift scaling: {r['within_10pct']:.0%} within +-10 %, median |error| "
          f"{r['median_abs_error']:.1%}")
    print(f"measurement spread (max over {a.reps} passes from their median): median "
          f"{np.median(spread):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

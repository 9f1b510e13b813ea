"""Predicted vs measured int8 latency, for fresh random specs no profile has seen: the figure a
user checks with ``edgeeff bench``.

1. ``edgeeff profile`` (in-process, the full design; or ``--profile FILE`` written before)
   fits the per-op model;
2. ``--n`` (24) random specs are drawn afresh each run (the seed is the clock's unless
   ``--seed``; both families, 20 M - 2 G MACs, 10 and 1000 classes, half compound-scaled,
   half independent width/depth/resolution, from another generator than the profile's Halton
   design, and checked against it: never used to fit);
3. each spec's int8 model -- exported (``--export``: ``edgeeff export --int8 --weights none``,
   cached under ~/.cache/edgeeff/bench-exports, TensorFlow needed), else synthesized by
   :mod:`edgeeff.device.synth` (tests/test_synth.py checks that graph equal to the export op by
   op and tensor by tensor: op codes and versions, options, shapes, quantisation layout; only
   the weight values differ, and the runtime's kernels do not depend on them) -- is timed
   with ``edgeeff bench``'s own code (:func:`edgeeff.device.bench.bench_model`: wall clock,
   p50) at ``--threads`` (1), in ``--reps`` passes over the whole set in a fresh random order
   each (so a busy spell on the machine hits one pass, not one spec); the median p50 per spec;
4. the table, then the two done-when figures: the share of specs predicted within +-10 % and
   the signed mean error (predicted / measured - 1), with the load average before and after.
   Nothing is rescaled: the prediction is compared with what ``bench`` shows.

Writes its section of docs/benchmarks.md (``--no-page``: do not).

Usage: python benchmarks/latency_model.py [--threads 1] [--n 24] [--reps 3] [--seed S]
       [--profile FILE] [--quick] [--export]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._page import write_section  # noqa: E402
from edgeeff.core import latency, specfile, targets  # noqa: E402
from edgeeff.core.cost import cost  # noqa: E402
from edgeeff.device import bench, profile, synth  # noqa: E402

EXPORTER_SOURCES = ["edgeeff/model/build.py", "edgeeff/export/tflite.py",
                    "edgeeff/export/__init__.py"]


def exported(spec, cache: Path) -> Path:
    """``edgeeff export --spec S --int8 --weights none``'s model_int8.tflite, cached by the
    exporter's sources and the spec."""
    h = hashlib.sha256(repr(sorted(spec.to_dict().items())).encode())
    for f in EXPORTER_SOURCES:
        h.update((ROOT / f).read_bytes())
    path = cache / f"{h.hexdigest()[:20]}.tflite"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        sf = Path(d) / "spec.json"
        specfile.write(sf, specfile.SpecFile(spec))
        r = subprocess.run([sys.executable, "-m", "edgeeff", "export", "--spec", str(sf),
                            "--weights", "none", "--int8", "--num-calib", "8", "--out",
                            str(Path(d) / "e")], capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if r.returncode:
            sys.exit(f"export of {spec.name} failed: {r.stderr.strip().splitlines()[-1:]}")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes((Path(d) / "e" / "model_int8.tflite").read_bytes())
        tmp.replace(path)
    return path


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=24, help="held-out specs")
    ap.add_argument("--reps", type=int, default=3, help="timing passes over the held-out set")
    ap.add_argument("--runs", type=int, default=30, help="bench runs per spec and pass")
    ap.add_argument("--seed", type=int, help="default: drawn from the clock (printed)")
    ap.add_argument("--profile", help="use this profile TOML instead of profiling now")
    ap.add_argument("--quick", action="store_true", help="profile with --quick's design")
    ap.add_argument("--export", action="store_true",
                    help="time real exports (TensorFlow) instead of synthesized graphs")
    ap.add_argument("--no-page", action="store_true", help="do not write docs/benchmarks.md")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else int(time.time()) % 2**31
    load0 = load()
    print(f"seed {seed}; load average {load0}")

    if a.profile:
        model = targets.load(a.profile).latency_model
        level = model.validation.get("reference_ms")
        design = set()
        print(f"profile {a.profile}: {model.runtime} {model.runtime_version}, "
              f"{model.threads} threads, {model.cpu}")
    else:
        t0 = time.perf_counter()
        res = profile.profile(threads=a.threads, quick=a.quick)
        model = res.model
        level = res.reference_ms
        v = model.validation
        print(f"profile: {len(res.measurements)} graphs in {time.perf_counter() - t0:.0f} s "
              f"({a.threads} thread{'s' if a.threads > 1 else ''}, {model.runtime} "
              f"{model.runtime_version}); cross-validated {v['within_10pct']:.0%} within "
              f"+-10 %; run-queue share {v.get('runqueue_share', 0):.0%}")
        design = {(m.probe.spec.family, m.probe.spec.width, m.probe.spec.depth,
                   m.probe.spec.resolution) for m in res.measurements}
    specs = profile.random_specs(a.n, seed)
    assert not any((s.family, s.width, s.depth, s.resolution) in design for s in specs)
    with tempfile.TemporaryDirectory(prefix="latency-model-") as d:
        paths = []
        for i, s in enumerate(specs):
            if a.export:
                paths.append(exported(s, Path.home() / ".cache/edgeeff/bench-exports"))
            else:
                p = Path(d) / f"{i}.tflite"
                p.write_bytes(synth.build(s))
                paths.append(p)
        ref = Path(d) / "reference.tflite"
        ref.write_bytes(synth.build(profile.REFERENCE, metadata=False))
        rng = np.random.default_rng(seed)
        p50 = np.zeros((a.reps, len(specs)))
        refs = []
        for r in range(a.reps):
            for k, i in enumerate(rng.permutation(len(specs))):
                row = bench.bench_model(paths[i], a.threads, a.runs, 5)
                p50[r, i] = row["p50_ms"]
                if k % 6 == 0:  # the profile's drift reference, for the diagnostic below
                    refs.append(bench.bench_model(ref, a.threads, a.runs, 5)["p50_ms"])
            print(f"pass {r + 1}/{a.reps} done (load average {load()})", flush=True)
    measured = np.median(p50, axis=0)
    spread = np.max(np.abs(p50 / measured - 1), axis=0)
    pred = np.array([model.predict_ms(s) for s in specs])
    err = pred / measured - 1
    load1 = load()

    lines = [f"{'#':>2} {'spec':<40} {'cls':>4} {'MACs':>6} {'bench p50':>9} {'+-':>5} "
             f"{'predicted':>9} {'error':>7}"]
    for i, s in enumerate(specs):
        lines.append(f"{i + 1:>2} {s.name:<40} {s.num_classes:>4} {cost(s).macs / 1e6:>5.0f}M "
                     f"{measured[i]:>9.3f} {spread[i]:>4.0%} {pred[i]:>9.3f} {err[i]:>+7.1%}")
    print("\n".join(lines))
    sm = latency.summarize(err)
    within, mean = sm["within_10pct"], float(np.mean(err))
    kind = "exported" if a.export else "synthesized (op-by-op equal to the export)"
    head = (f"{within:.0%} of {len(specs)} fresh random specs within +-10 % of bench p50 "
            f"(target >= 90 %); signed mean error {mean:+.1%} (target within +-3 %); "
            f"median |error| {sm['median_abs_error']:.1%}, max {sm['max_abs_error']:.1%}")
    print("\n" + head)
    if level:
        now = float(np.median(refs))
        e2 = pred / (measured * level / now) - 1
        print(f"diagnostic: the profile's reference graph ({profile.REFERENCE.name}) took "
              f"{level:.3f} ms while profiling and {now:.3f} ms during these passes (x"
              f"{now / level:.2f}: the machine's speed changed between them); scaled by it, "
              f"{latency.summarize(e2)['within_10pct']:.0%} within +-10 %, signed mean "
              f"{float(np.mean(e2)):+.1%} (not the headline: bench shows the unscaled figure)")
    print(f"{kind} int8 models, {a.threads} thread(s), {a.reps} passes of bench_model "
          f"({a.runs} runs, 5 warm-up); seed {seed}; load average {load0} before, {load1} after")
    if not a.no_page:
        cmd = ("python benchmarks/latency_model.py" + (f" --profile {a.profile}" if a.profile else "")
               + (" --quick" if a.quick else "") + (" --export" if a.export else "")
               + f" --threads {a.threads} --n {a.n} --reps {a.reps} --seed {seed}")
        body = (f"**{head}.**\n\n{kind} int8 models timed with `edgeeff bench`'s code at "
                f"{a.threads} thread(s), median p50 of {a.reps} passes; load average {load0} "
                f"before, {load1} after.\n\n```\n" + "\n".join(lines) + "\n```")
        write_section("latency_model", "Latency model against bench p50 on fresh specs", body,
                      cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

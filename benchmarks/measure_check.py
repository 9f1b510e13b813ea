"""Can ``fit --measure``'s latency be trusted? Its figure for its pick against ``edgeeff bench``'s
p50 of the EXPORTED pick, on an idle machine and beside a competing process.

For each condition: ``edgeeff fit --device D --max-mflops M --measure --threads T --json`` as a
user runs it (its summary line: candidates timed, seconds, spread); then the pick exported with
``edgeeff export --spec PICK --int8 --weights none`` (TensorFlow; without it, ``--synth`` times
the pick's synthesized graph, op-by-op equal to the export, see tests/test_synth.py) and timed
with ``edgeeff bench``'s code (wall clock, p50 of ``--runs`` frames, median of ``--reps``
calls). "Loaded" runs one busy-loop process per usable core at nice 19 during both. Done when
fit / bench is within 10 % of 1 (idle).

Usage: python benchmarks/measure_check.py [--device pi4] [--max-mflops 60] [--threads 1]
       [--runs 50] [--reps 5] [--synth] [--no-loaded]
"""

from __future__ import annotations

import argparse
import json
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
from edgeeff.core import specfile  # noqa: E402
from edgeeff.device import bench, synth  # noqa: E402
from edgeeff.device.profile.host import usable_cores  # noqa: E402

TARGET = 0.10
BUSY = "while True: pass"


def run_fit(args, out: Path) -> tuple[dict, float, str]:
    cmd = [sys.executable, "-m", "edgeeff", "fit", "--device", args.device, "--max-mflops",
           str(args.max_mflops), "--measure", "--threads", str(args.threads), "--json",
           "--out", str(out)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    took = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"fit failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    line = next((ln for ln in r.stderr.splitlines() if ln.startswith("edgeeff: timed ")
                 and "budget" in ln), "")
    return json.loads(r.stdout), took, line.removeprefix("edgeeff: ")


def pick_model(spec_path: Path, tmp: Path, synthesized: bool) -> tuple[Path, str]:
    """The pick's int8 model: exported (TensorFlow), or synthesized with ``--synth``."""
    if synthesized:
        m = tmp / "pick.tflite"
        m.write_bytes(synth.build(specfile.read(spec_path).spec))
        return m, "synthesized"
    out = tmp / "export"
    r = subprocess.run([sys.executable, "-m", "edgeeff", "export", "--spec", str(spec_path),
                        "--weights", "none", "--int8", "--num-calib", "8", "--out", str(out)],
                       capture_output=True, text=True, timeout=1800,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if r.returncode != 0:
        sys.exit(f"export failed (no TensorFlow? use --synth): "
                 f"{r.stderr.strip().splitlines()[-1:]}")
    return out / "model_int8.tflite", "exported"


def bench_p50(model: Path, threads: int, runs: int, reps: int) -> float:
    """``edgeeff bench``'s p50 (its own code), median of ``reps`` calls."""
    return float(np.median([bench.bench_model(model, threads, runs, 5)["p50_ms"]
                            for _ in range(reps)]))


def competitors(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY], preexec_fn=lambda: os.nice(19))
            for _ in range(n)]


def measure(args, condition: str, tmp: Path) -> dict:
    procs = competitors(usable_cores()) if condition == "loaded" else []
    load0 = os.getloadavg()[0]
    try:
        time.sleep(0.5 if procs else 0)
        out = tmp / f"{condition}.json"
        fit, took, line = run_fit(args, out)
        model, kind = pick_model(out, tmp / condition, args.synth)
        wall = bench_p50(model, args.threads, args.runs, args.reps)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    ratio = fit["latency_ms"] / wall
    return {"condition": condition, "pick": fit["name"], "fit_ms": fit["latency_ms"],
            "source": fit["latency_source"], "bench_p50_ms": round(wall, 3), "model": kind,
            "ratio": round(ratio, 3), "ok": abs(ratio - 1) <= TARGET,
            "fit_s": round(took, 1), "search": line, "competitors": len(procs),
            "load_before": round(load0, 1), "load_after": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="pi4")
    ap.add_argument("--max-mflops", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--synth", action="store_true", help="time the synthesized pick (no TF)")
    ap.add_argument("--no-loaded", action="store_true", help="the idle condition only")
    ap.add_argument("--no-page", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="measure-check-") as d:
        conds = ("idle",) if args.no_loaded else ("idle", "loaded")
        rows = [measure(args, c, Path(d)) for c in conds]
    for r in rows:
        print(json.dumps(r))
        print(f"{r['condition']}: fit --measure {r['fit_ms']} ms vs bench p50 of the "
              f"{r['model']} pick {r['bench_p50_ms']} ms: {r['ratio'] - 1:+.1%} "
              f"(target within 10 %); fit took {r['fit_s']} s; {r['search']}; load average "
              f"{r['load_before']} before, {r['load_after']} after")
    lines = ["| condition | pick | fit --measure ms | bench p50 ms | model timed | ratio | "
             "within 10 % | fit took s | search | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cond = r["condition"] + (f" ({r['competitors']} busy loops, nice 19)"
                                 if r["competitors"] else "")
        lines.append(f"| {cond} | {r['pick']} | {r['fit_ms']} | {r['bench_p50_ms']} | "
                     f"{r['model']} | {r['ratio']} | {'yes' if r['ok'] else 'no'} | "
                     f"{r['fit_s']} | {r['search']} | {r['load_before']} → {r['load_after']} |")
    from edgeeff.device.runtime import runtime_info

    rt = " ".join(runtime_info())
    body = "\n".join(lines) + (
        f"\n\n{rt}, {args.threads} thread{'s' if args.threads != 1 else ''}; bench p50: "
        f"median of {args.reps} calls of edgeeff bench's code ({args.runs} runs, 5 warm-up) "
        "on the pick's int8 model.")
    cmd = ("python benchmarks/measure_check.py" + (" --synth" if args.synth else "")
           + (" --no-loaded" if args.no_loaded else "")
           + f" --device {args.device} --max-mflops {args.max_mflops:g} --threads {args.threads}")
    if not args.no_page:
        write_section("measure_check", "fit --measure against the exported pick", body, cmd)
    sys.exit(0 if rows[0]["ok"] else 1)


if __name__ == "__main__":
    main()

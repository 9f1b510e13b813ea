"""Can ``fit --measure``'s latency be trusted? Its figure for its pick against an independent
wall-clock timing of the same graph, on an idle machine and beside a competing process.

For each condition: ``edgeeff fit --device D --max-mflops M --measure --threads T --json`` as a
user runs it; then the pick's synthesized int8 graph (``edgeeff.device.synth.build``, what
``fit --measure`` times) loaded straight into the TFLite runtime's Interpreter (none of
edgeeff's timing code) and ``time.perf_counter`` around batches of N invokes: the median batch
mean. "Loaded" runs one busy-loop process per usable core at nice 19 during both. The ratio
fit / wall should be within 15 % of 1.

Usage: python benchmarks/measure_check.py [--quick] [--device pi4] [--max-mflops 60]
       [--threads 1] [--invokes 50] [--batches 7]
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
from edgeeff.device import synth  # noqa: E402
from edgeeff.device.profile.host import usable_cores  # noqa: E402

TARGET = 0.15
BUSY = "while True: pass"


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai_edge_litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite_runtime"


def run_fit(args, out: Path) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "edgeeff", "fit", "--device", args.device, "--max-mflops",
           str(args.max_mflops), "--measure", "--threads", str(args.threads), "--json",
           "--out", str(out)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    took = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"fit failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout), took


def wall_ms(model: Path, threads: int, invokes: int, batches: int) -> float:
    """Median over ``batches`` of (time of ``invokes`` back-to-back invokes) / ``invokes``."""
    Interpreter, _ = interpreter_class()
    it = Interpreter(model_path=str(model), num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    for _ in range(3):
        it.invoke()
    means = []
    for _ in range(batches):
        t = time.perf_counter()
        for _ in range(invokes):
            it.invoke()
        means.append((time.perf_counter() - t) / invokes * 1000.0)
    return float(np.median(means))


def competitors(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY], preexec_fn=lambda: os.nice(19))
            for _ in range(n)]


def measure(args, condition: str, tmp: Path) -> dict:
    procs = competitors(usable_cores()) if condition == "loaded" else []
    try:
        time.sleep(0.5 if procs else 0)
        out = tmp / f"{condition}.json"
        fit, took = run_fit(args, out)
        spec = specfile.read(out).spec
        model = tmp / f"{condition}.tflite"
        model.write_bytes(synth.build(spec, metadata=False))
        wall = wall_ms(model, args.threads, args.invokes, args.batches)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    ratio = fit["latency_ms"] / wall
    return {"condition": condition, "pick": fit["name"], "fit_ms": fit["latency_ms"],
            "source": fit["latency_source"], "wall_ms": round(wall, 3),
            "ratio": round(ratio, 3), "ok": abs(ratio - 1) <= TARGET,
            "fit_s": round(took, 1), "competitors": len(procs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="pi4")
    ap.add_argument("--max-mflops", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--invokes", type=int, default=50)
    ap.add_argument("--batches", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer invokes (20 x 5)")
    ap.add_argument("--no-page", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args()
    if args.quick:
        args.invokes, args.batches = 20, 5
    _, runtime = interpreter_class()
    with tempfile.TemporaryDirectory(prefix="measure-check-") as d:
        rows = [measure(args, c, Path(d)) for c in ("idle", "loaded")]
    for r in rows:
        print(json.dumps(r))
    lines = ["| condition | pick | fit --measure ms | wall clock ms | ratio | within 15 % | "
             "fit took s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cond = r["condition"] + (f" ({r['competitors']} busy loops, nice 19)"
                                 if r["competitors"] else "")
        lines.append(f"| {cond} | {r['pick']} | {r['fit_ms']} | {r['wall_ms']} | "
                     f"{r['ratio']} | {'yes' if r['ok'] else 'no'} | {r['fit_s']} |")
    body = "\n".join(lines) + (
        f"\n\n{runtime}, {args.threads} thread{'s' if args.threads != 1 else ''}; wall clock: "
        f"median of {args.batches} batch means of {args.invokes} invokes of the pick's "
        "synthesized graph, timed with time.perf_counter around the runtime's own Interpreter.")
    cmd = ("python benchmarks/measure_check.py" + (" --quick" if args.quick else "")
           + f" --device {args.device} --max-mflops {args.max_mflops:g} --threads {args.threads}")
    if not args.no_page:
        write_section("measure_check", "fit --measure against the wall clock", body, cmd)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()

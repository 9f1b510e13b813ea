"""Synthetic vs exported int8 latency: is edgeeff.device.synth's graph as fast as the real one?

For each spec: ``edgeeff export --int8 --weights none`` (TensorFlow, cached under
``~/.cache/edgeeff/bench-exports``, keyed by the exporter's sources and versions) and
``synth.build(spec)`` (numpy + flatbuffers, timed here), then both timed with ai-edge-litert,
rounds interleaved (A B A B ...):

* 2 threads, wall clock: median over rounds of the fastest of 3 invokes;
* 1 thread, net of run-queue waits (wall time minus the time the thread waited for a CPU,
  ``/proc/self/task/*/schedstat``): steadier on a shared machine.

Usage: python benchmarks/synth_latency.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeeff.core import specfile  # noqa: E402
from edgeeff.core.cost import cost  # noqa: E402

# (label, preset, phi, family, classes, resolution)
SPECS = [
    ("lite0", "lite0", None, None, 1000, None),
    ("b0", "b0", None, None, 1000, None),
    ("lite phi -4", None, -4.0, "lite", 10, None),
    ("efficientnet phi -2", None, -2.0, "efficientnet", 1000, None),
    ("lite phi +1 @ 192", None, 1.0, "lite", 1000, 192),
    ("efficientnet phi -6", None, -6.0, "efficientnet", 10, None),
]
# what the exported graph depends on: the Keras builder, the converter calls, the versions and
# the spec's layout (core.graph walks the same block list as the builder)
EXPORTER_SOURCES = ["edgeeff/model/build.py", "edgeeff/export/tflite.py",
                    "edgeeff/export/__init__.py"]


def _versions() -> str:
    out = []
    for pkg in ("tensorflow", "keras", "tf-keras"):
        try:
            out.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            pass
    return ",".join(out)


def cli_args(preset, phi, family, classes, res) -> list[str]:
    a = ["--preset", preset] if preset else ["--phi", str(phi), "--family", family]
    a += ["--num-classes", str(classes)]
    if res:
        a += ["--resolution", str(res)]
    return a


def export_cached(args: list[str], spec, cache: Path) -> bytes:
    """model_int8.tflite of ``edgeeff export ARGS --weights none --int8``, cached."""
    from edgeeff.core.graph import graph

    h = hashlib.sha256(_versions().encode())
    for f in EXPORTER_SOURCES:
        h.update((ROOT / f).read_bytes())
    h.update(" ".join(args).encode())
    g = graph(spec)
    h.update(repr([(op.kind, g.shape(op.output), op.weights) for op in g.ops]).encode())
    path = cache / f"{h.hexdigest()[:20]}.tflite"
    if path.is_file():
        return path.read_bytes()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "export"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        r = subprocess.run([sys.executable, "-m", "edgeeff.cli", "export", *args, "--weights",
                            "none", "--int8", "--num-calib", "8", "--out", str(out)],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode:
            raise SystemExit(f"export {' '.join(args)} failed: {r.stderr[-800:]}")
        data = (out / "model_int8.tflite").read_bytes()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def main(argv: list[str]) -> int:
    from edgeeff.device import synth
    from edgeeff.device.profile import time_interleaved

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="three specs, fewer rounds")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--cache", default=str(Path.home() / ".cache/edgeeff/bench-exports"))
    a = ap.parse_args(argv)
    specs = SPECS[:3] if a.quick else SPECS
    rounds = 15 if a.quick else a.rounds
    rows = []
    print(f"{'spec':<22} {'MACs':>7} {'synth ms (cpu)':>14} | {'2 thr export':>12} {'synth':>8} "
          f"{'ratio':>6} | {'1 thr export':>16} {'synth':>8} {'ratio':>6}")
    for label, preset, phi, family, classes, res in specs:
        spec = specfile.resolve(None, preset, phi, family, classes, res)
        exported = export_cached(cli_args(preset, phi, family, classes, res), spec,
                                 Path(a.cache))
        synth.build(spec)  # warm imports
        t, c = [], []
        for _ in range(5):
            t0, c0 = time.perf_counter(), time.thread_time()
            synthetic = synth.build(spec)
            t.append(time.perf_counter() - t0)
            c.append(time.thread_time() - c0)
        build_ms, build_cpu_ms = 1000 * min(t), 1000 * min(c)
        e2, s2 = time_interleaved([exported, synthetic], threads=2, rounds=rounds, runs=3)
        e1, s1 = time_interleaved([exported, synthetic], threads=1, rounds=rounds, runs=3)
        rows.append((s2 / e2, s1 / e1))
        print(f"{label:<22} {cost(spec).macs / 1e6:>6.0f}M {build_ms:>6.0f} ({build_cpu_ms:>4.0f}) | {e2:>12.3f} "
              f"{s2:>8.3f} {s2 / e2:>6.3f} | {e1:>16.3f} {s1:>8.3f} {s1 / e1:>6.3f}", flush=True)
    r = np.array(rows)
    print(f"ratio synthetic/exported: 2 threads {r[:, 0].min():.3f}..{r[:, 0].max():.3f} "
          f"(median {np.median(r[:, 0]):.3f}); 1 thread {r[:, 1].min():.3f}.."
          f"{r[:, 1].max():.3f} (median {np.median(r[:, 1]):.3f}); target 0.95..1.05")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

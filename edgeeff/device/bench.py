"""``edgeeff bench``: interpreter latency percentiles, throughput and peak memory.

Runs on any TFLite runtime (no TensorFlow). Given an export folder it measures the float32 and
int8 models one after the other, in the same process and conditions, and reports the ratio.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.latency import Timing
from edgeeff.device.runtime import Classifier, resolve_model_path


def _peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def bench_model(path: Path, threads: int | None, runs: int, warmup: int,
                delegate: str | None = None, seconds: float | None = None) -> dict:
    """Latency percentiles of ``runs`` invokes after ``warmup``; with ``seconds``, as many
    invokes as fit in about that time instead (at least three)."""
    if runs < 1 or warmup < 0:
        raise EdgeeffError("--runs must be >= 1 and --warmup >= 0")
    clf = Classifier(path, num_threads=threads, delegate=delegate)
    rng = np.random.default_rng(0)
    clf.set_input(rng.integers(0, 256, (clf.resolution, clf.resolution, 3), dtype=np.uint8))
    for _ in range(warmup):
        clf.invoke()
    if seconds is not None:
        t = time.perf_counter()
        clf.invoke()
        one = max(time.perf_counter() - t, 1e-6)
        runs = max(3, int(seconds / one))
    lat = np.empty(runs)
    t0 = time.perf_counter()
    for i in range(runs):
        t = time.perf_counter()
        clf.invoke()
        lat[i] = (time.perf_counter() - t) * 1000.0
    wall = time.perf_counter() - t0
    t = Timing.of(lat, wall)
    return {
        "model": path.name, "bytes": path.stat().st_size, "runtime": clf.runtime,
        "delegate": clf.delegate or "none (CPU, XNNPACK where supported)",
        "threads": threads, "runs": runs,
        "p50_ms": round(t.p50_ms, 3),  # the statistic edgeeff profile predicts
        "p90_ms": round(t.p90_ms, 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "mean_ms": round(float(lat.mean()), 3),
        "throughput_per_s": round(runs / wall, 2),
        "peak_rss_bytes": _peak_rss_bytes(),
    }


def bench(model: str | Path, threads: int | None = 2, runs: int = 50, warmup: int = 5,
          delegate: str | None = None) -> dict:
    p = Path(model)
    if p.is_dir():
        found = [p / n for n in artifacts.BENCH_MODELS if (p / n).is_file()]
        if not found:
            raise EdgeeffError(f"no .tflite models in {p}")
        rows = [bench_model(f, threads, runs, warmup, delegate) for f in found]
        res = {"models": rows}
        by_name = {r["model"]: r for r in rows}
        f32, i8 = by_name.get(artifacts.FLOAT_MODEL), by_name.get(artifacts.INT8_MODEL)
        if f32 and i8:
            res["int8_speedup_p50"] = round(f32["p50_ms"] / i8["p50_ms"], 2)
        return res
    return {"models": [bench_model(resolve_model_path(p), threads, runs, warmup, delegate)]}

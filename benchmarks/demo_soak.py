"""Demo soak test: the sample clip, over and over, for N minutes in one process; RSS drift.

Each pass is a whole ``run_demo(..., source="sample", headless=True)``: the video is opened,
the capture thread started, every frame classified, the thread joined and the source
released, so a leak in any of those grows with the number of passes. Prints the resident set
size at the start (after one warm-up pass), every minute, and the drift at the end.

Usage: python benchmarks/demo_soak.py [EXPORT_DIR | MODEL.tflite] [--minutes N] [--threads N]
Without a model it exports Lite0 int8 first (in a subprocess, so TensorFlow stays out of the
measured process).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _demo_bench import demo_parser, model_path, rss_bytes  # noqa: E402


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def soak(model: Path, minutes: float, threads: int | None) -> dict:
    from edgeeff.device.demo import default_threads, run_demo
    from edgeeff.device.runtime import Classifier, resolve_model_path

    clf = Classifier(resolve_model_path(model), num_threads=threads or default_threads())
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        run_demo(clf, "sample", True, False, 3, None, out=sink, err=sink)  # warm-up
        start_rss, t0 = rss_bytes(), time.monotonic()
        print(f"start: RSS {_mb(start_rss)} ({clf.path.name}, {clf.runtime})", flush=True)
        passes = frames = 0
        next_report, samples = 60.0, [start_rss]
        while (elapsed := time.monotonic() - t0) < minutes * 60:
            frames += run_demo(clf, "sample", True, False, 3, None, out=sink, err=sink)["frames"]
            passes += 1
            if time.monotonic() - t0 >= next_report:
                samples.append(rss_bytes())
                print(f"minute {int(next_report // 60)}: RSS {_mb(samples[-1])}, "
                      f"{passes} passes, {frames} frames", flush=True)
                next_report += 60.0
    finally:
        sink.close()
    end_rss = rss_bytes()
    drift = end_rss - start_rss
    print(f"end after {elapsed / 60:.1f} min: RSS {_mb(end_rss)}, {passes} passes, {frames} "
          f"frames ({frames / elapsed:.0f} FPS); drift {drift / 2**20:+.1f} MiB "
          f"({100 * drift / start_rss:+.1f} %)", flush=True)
    return {"start_rss": start_rss, "end_rss": end_rss, "drift": drift, "passes": passes,
            "frames": frames, "minutes": elapsed / 60, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    ap = demo_parser(__doc__)
    ap.add_argument("--minutes", type=float, default=10.0, metavar="N",
                    help="how long to loop the sample clip (default 10)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        soak(model_path(a.model, Path(d)), a.minutes, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

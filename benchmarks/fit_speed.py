"""`edgeeff fit` wall time against `python -c "import tensorflow"`, measured in the same run.

Target: fit < 0.3 x the TensorFlow import. Both run as fresh processes, best of N (the
machines are shared and noisy; the minimum is the least disturbed run).
Usage: python benchmarks/fit_speed.py [N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def best_of(cmd: list[str], n: int) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=5, metavar="N",
                    help="runs of each command; the best counts (default 5)")
    n = ap.parse_args(argv).n
    with tempfile.TemporaryDirectory() as d:
        fit = best_of([sys.executable, "-m", "edgeeff.cli", "fit", "--device", "pi4",
                       "--max-mflops", "400", "--out", f"{d}/s.json"], n)
    tf = best_of([sys.executable, "-c", "import tensorflow"], n)
    print(f"edgeeff fit --device pi4 --max-mflops 400: {fit * 1000:.0f} ms (best of {n})")
    print(f"python -c 'import tensorflow':            {tf * 1000:.0f} ms (best of {n})")
    print(f"ratio fit / import tensorflow: {fit / tf:.3f} (target < 0.3)")
    return 0 if fit / tf < 0.3 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

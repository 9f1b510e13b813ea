"""Measure the smallest tensor arena a model allocates in, with tflite-micro's Python interpreter.

Run as a subprocess (``python -m edgeeff.export.tflm_probe MODEL.tflite [--invoke INPUT.npy]``):
an op TFLite Micro lacks can abort the whole process, and the parent must survive that.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys

import numpy as np

ALIGN = 16
MAX_ARENA = 1 << 30


def _allocates(model: bytes, size: int) -> bool:
    from tflite_micro.python.tflite_micro import runtime

    try:
        runtime.Interpreter.from_bytes(model, arena_size=size)
        return True
    except RuntimeError:
        return False


def min_arena(model: bytes) -> int:
    hi = max(4096, len(model) // 4)
    while not _allocates(model, hi):
        hi *= 2
        if hi > MAX_ARENA:
            raise RuntimeError(f"does not allocate even in {MAX_ARENA} bytes")
    lo = 0  # invariant: lo fails (or is 0), hi allocates
    while hi - lo > ALIGN:
        mid = (lo + hi) // 2 // ALIGN * ALIGN
        if mid <= lo:
            break
        lo, hi = (lo, mid) if _allocates(model, mid) else (mid, hi)
    return hi


def main(argv: list[str]) -> int:
    path = argv[0]
    model = open(path, "rb").read()
    result = {"min_arena_bytes": min_arena(model)}
    if "--invoke" in argv:
        from tflite_micro.python.tflite_micro import runtime

        x = np.load(argv[argv.index("--invoke") + 1])
        it = runtime.Interpreter.from_bytes(model, arena_size=result["min_arena_bytes"])
        it.set_input(x, 0)
        it.invoke()
        result["output"] = it.get_output(0).ravel().tolist()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

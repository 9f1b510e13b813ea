"""Measure the smallest tensor arena a model allocates in, with tflite-micro's Python interpreter.

Run as a subprocess (``python -m edgeeff.export.tflm_probe MODEL.tflite [--invoke INPUT.npy]``):
an op TFLite Micro lacks can abort the whole process, and the parent must survive that.
Prints one JSON object on stdout. ``--tflite ref|auto INPUT.npy`` instead runs the model once
with the TFLite interpreter's reference (or default optimized) kernels, which can abort too.
"""

from __future__ import annotations

import json
import sys

import numpy as np

ALIGN = 16
MAX_ARENA = 1 << 30
# the exit code when tflite_micro does not import here: the parent names the extra from this,
# not from the traceback's words
NO_TFLITE_MICRO = 3


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


def tflite_output(path: str, kind: str, x: np.ndarray) -> list[int]:
    """The output of one TFLite interpreter run: ``kind`` "ref" (reference kernels) or "auto"."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
        OpResolverType = tf.lite.experimental.OpResolverType
    resolver = OpResolverType.BUILTIN_REF if kind == "ref" else OpResolverType.AUTO
    it = Interpreter(model_path=path, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).ravel().tolist()


def main(argv: list[str]) -> int:
    path = argv[0]
    if "--tflite" in argv:
        i = argv.index("--tflite")
        print(json.dumps({"output": tflite_output(path, argv[i + 1], np.load(argv[i + 2]))}))
        return 0
    try:
        return _micro(path, argv)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "tflite_micro":
            raise
        print(f"edgeeff.export.tflm_probe: {e}", file=sys.stderr)
        return NO_TFLITE_MICRO


def _micro(path: str, argv: list[str]) -> int:
    """The arena (and with ``--invoke`` one run) with tflite-micro's interpreter."""
    model = open(path, "rb").read()
    if "--arena" in argv:  # given: only invoke (see --invoke)
        result = {"min_arena_bytes": int(argv[argv.index("--arena") + 1])}
    else:
        result = {"min_arena_bytes": min_arena(model)}
    if "--invoke" in argv:
        from tflite_micro.python.tflite_micro import runtime

        x = np.load(argv[argv.index("--invoke") + 1])
        try:  # a roomy arena: this run is for the output values, not the size
            it = runtime.Interpreter.from_bytes(model, arena_size=2 * result["min_arena_bytes"])
            it.set_input(x, 0)
            it.invoke()
            result["output"] = it.get_output(0).ravel().tolist()
        except RuntimeError as e:
            result["invoke_error"] = str(e).strip().splitlines()[-1] if str(e).strip() else "failed"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

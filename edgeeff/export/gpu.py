"""The GPU-delegate model: float16 weights, float32 input and output, and the GPU report.

:func:`convert_float16` is the float conversion of :mod:`edgeeff.export.tflite` with
TFLiteConverter's float16 weight quantisation (optimizations DEFAULT, supported_types
[float16]): every weight is stored as float16 with a DEQUANTIZE to float32 in front of its op,
which the GPU delegate folds away (it computes in float16), while the CPU runs the float32
graph. :func:`gpu_report` checks a written model op by op against the delegate's rules
(:mod:`edgeeff.core.gpu`) and records what ``tf.lite.experimental.Analyzer`` says of it.
"""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

from edgeeff.core import gpu
from edgeeff.export.tflite import _convert, _converter
from edgeeff.model.quiet import captured_output
from edgeeff.tflite import reader


def convert_float16(model) -> bytes:
    """A Keras model (or a SavedModel folder) -> a float16-weight .tflite, float32 I/O."""
    import tensorflow as tf

    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return _convert(conv, "float16")


def analyzer_text(model: bytes) -> str:
    """What ``tf.lite.experimental.Analyzer.analyze(gpu_compatibility=True)`` prints."""
    import tensorflow as tf

    buf = io.StringIO()
    with captured_output(), contextlib.redirect_stdout(buf):
        tf.lite.experimental.Analyzer.analyze(model_content=model, gpu_compatibility=True)
    return buf.getvalue()


@functools.cache
def analyzer_checks_ops() -> bool:
    """Does this TensorFlow's Analyzer check ops at all? It must flag a canary op the GPU
    delegate never runs (:data:`edgeeff.core.gpu.CANARY_OP`)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([8], tf.float32)])
    def canary(x):
        return tf.math.segment_sum(x, tf.zeros([8], tf.int32))

    with captured_output():
        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [canary.get_concrete_function()], canary)
        model = conv.convert()
    res = gpu.parse_analyzer(analyzer_text(model))
    return any(res.ops[i] == gpu.CANARY_OP for i, _ in res.flagged)


def file_ops(model: bytes, path=None) -> list[tuple[str, list[tuple[int, ...]], list[str]]]:
    """(builtin, input shapes, input dtypes) of every op of a .tflite, in order."""
    g = reader.read(model, path)
    out = []
    for op in g.ops:
        ins = [g.tensors[t] for t in op.all_inputs if t >= 0]
        out.append((op.kind, [t.file_shape for t in ins], [t.dtype for t in ins]))
    return out


def gpu_report(path: Path, analyzer: bool = True) -> gpu.GpuReport:
    """:class:`edgeeff.core.gpu.GpuReport` of a written .tflite (with the Analyzer's verdict)."""
    import tensorflow as tf

    model = Path(path).read_bytes()
    res = None
    if analyzer:
        res = gpu.parse_analyzer(analyzer_text(model), analyzer_checks_ops(), tf.__version__)
    return gpu.report(Path(path).name, file_ops(model, path), res)

"""Float32 and full-integer TFLite conversion (tf.lite.TFLiteConverter), and the quantisation report.

int8 models are full-integer: TFLITE_BUILTINS_INT8 only, batch 1 and static shapes, with
uint8 input that takes raw RGB pixels and uint8 output (``io="uint8"``, the default: MediaPipe's
and Coral's convention) or int8 input and output (``io="int8"``: no conversion ops). A uint8
model's input conversion is then rewritten for CPUs (:func:`edgeeff.tflite.rewrite.cpu_form`,
see :func:`edgeeff.core.graph.input_ops`): the converter's form stays the input of TFLite
Micro and the Edge TPU compiler. For the lite family the normalisation (x - 127) / 128 is
folded into the input's quantisation (scale 1/128, zero point 127), so the graph starts
directly with the stem convolution (and the float32 model takes the normalised image, as TF's own
Lite models do); for the efficientnet family the per-channel normalisation stays in the graph.

The converter is run once: the float32 flatbuffer is the model_float32.tflite artifact *and* the
input of post-training quantisation (calibration, then TFLite's MLIR quantizer), which is what
TFLiteConverter does internally after its own float conversion. Those internals are checked up
front (:func:`shared_quantizer_unavailable`); should they move in a future TensorFlow, the
exporter says so and runs the full converter instead, and the model card records which
quantizer made the model.
"""

from __future__ import annotations

import csv
import inspect
import io

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import raise_if_interrupted
from edgeeff.core.graph import IO_TYPES
from edgeeff.core.preprocess import Preprocessor
from edgeeff.device.runtime import Classifier
from edgeeff.export.quantreport import QuantReport
from edgeeff.model.quiet import captured_output, tail


class QuantizationFailed(EdgeeffError):
    """Post-training quantization raised: ``error_type`` (the exception's class name) and
    ``detail`` (the converter's last log lines, or the exception's first line)."""

    def __init__(self, error_type: str, detail: str):
        super().__init__(f"int8 quantization failed ({error_type}): {detail}")
        self.error_type, self.detail = error_type, detail


def _convert(conv, what: str) -> bytes:
    log: list[str] = []
    try:
        with captured_output(log):
            return conv.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise_if_interrupted()  # a Ctrl-C the converter swallowed is not a failed conversion
        detail = tail(log[0] if log else "", 2) or str(e).splitlines()[0]
        raise EdgeeffError(f"{what} conversion failed: {detail[:300]}") from None


def _converter(model):
    """A TFLiteConverter for a Keras model, or for a SavedModel folder (ONNX imports)."""
    import tensorflow as tf

    with captured_output():  # Keras 3 prints its SavedModel signature here
        if isinstance(model, str):
            return tf.lite.TFLiteConverter.from_saved_model(model)
        return tf.lite.TFLiteConverter.from_keras_model(model)


def convert_float(keras_model) -> bytes:
    return _convert(_converter(keras_model), "float32")


def representative(images: np.ndarray, pp: Preprocessor, on_sample=None, layout: str = "NHWC"):
    """Generator factory for the converter: one (1, r, r, 3) float32 sample at a time.

    ``pp`` says how pixels reach the model (raw, or normalised). The first sample gets one
    black and one white pixel so that the input range the converter records is exactly 0..255
    (uint8 input = raw pixels, or their normalised image), whatever the photos contain.
    """

    def gen():
        for i, img in enumerate(images):
            x = img.astype(np.float32)[None]
            if i == 0:
                x[0, 0, 0, :], x[0, 0, 1, :] = 0.0, 255.0
            x = pp.normalize(x)
            if layout == "NCHW":
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            if on_sample:
                on_sample()
            yield [x]

    return gen


QUANTIZER = "calibrator+mlir_quantize"


def _shared_quantizer():
    """(calibrator module, mlir_quantize, None), or (None, None, reason) when this TensorFlow
    lacks the internals :func:`quantize_float_model` uses, checked up front by name and
    signature (never by catching errors while quantising)."""
    try:
        from tensorflow.lite.python import convert
        from tensorflow.lite.python.optimize import calibrator
    except ImportError as e:
        return None, None, f"tensorflow.lite.python internals not importable ({e})"
    fn = getattr(convert, "mlir_quantize", None)
    if fn is None:
        return None, None, "tensorflow.lite.python.convert.mlir_quantize is missing"
    for name in ("add_intermediate_tensors", "Calibrator"):
        if not hasattr(calibrator, name):
            return None, None, f"tensorflow.lite.python.optimize.calibrator.{name} is missing"
    if not callable(getattr(calibrator.Calibrator, "calibrate", None)):
        return None, None, "Calibrator.calibrate is missing"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return None, None, "mlir_quantize has no inspectable signature"
    missing = [k for k in ("input_data_type", "output_data_type") if k not in params]
    if missing or len(params) < 2:
        return None, None, f"mlir_quantize takes no {', '.join(missing) or 'model argument'}"
    return calibrator, fn, None


def shared_quantizer_unavailable() -> str | None:
    """Why the shared float->int8 path cannot be used with this TensorFlow (None: it can)."""
    return _shared_quantizer()[2]


def _io_type(io: str):
    import tensorflow as tf

    if io not in IO_TYPES:
        raise EdgeeffError(f"--io must be one of {', '.join(IO_TYPES)}, got {io!r}")
    return getattr(tf, io)


def quantize_float_model(float_model: bytes, images: np.ndarray, pp: Preprocessor,
                         on_sample=None, io: str = "uint8") -> bytes:
    """Calibrate and fully quantise an already converted float32 flatbuffer (``io`` in/out).

    Check :func:`shared_quantizer_unavailable` first (the exporter falls back to
    :func:`convert_int8`, and says so, when it is not None). Any failure while quantising,
    TypeErrors included, is an :class:`EdgeeffError`: it never silently triggers the fallback.
    """
    dtype = _io_type(io)
    calibrator, mlir_quantize, why = _shared_quantizer()
    if why is not None:
        raise QuantizationFailed("unavailable", why)
    log: list[str] = []
    try:
        with captured_output(log):
            model = calibrator.add_intermediate_tensors(float_model)
            calibrated = calibrator.Calibrator(model).calibrate(
                representative(images, pp, on_sample))
            return mlir_quantize(calibrated, False, input_data_type=dtype,
                                 output_data_type=dtype)
    except Exception as e:  # noqa: BLE001 - the quantizer raises many types
        raise_if_interrupted()  # the calibrator runs our generator from native code
        detail = tail(log[0] if log else "", 2) or (str(e).splitlines() or [""])[0]
        raise QuantizationFailed(type(e).__name__, detail[:300]) from None


def _int8_converter(model, images: np.ndarray, pp: Preprocessor, on_sample=None):
    """A converter set up for full-integer quantisation (TFLITE_BUILTINS_INT8 only)."""
    import tensorflow as tf

    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative(images, pp, on_sample)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv


def convert_int8(model, images: np.ndarray, pp: Preprocessor, on_sample=None,
                 io: str = "uint8") -> bytes:
    """The full converter path, ``io`` in and out (used when the shared path is unavailable)."""
    dtype = _io_type(io)
    conv = _int8_converter(model, images, pp, on_sample)
    conv.inference_input_type = dtype
    conv.inference_output_type = dtype
    return _convert(conv, "int8")


def quant_report(float_path, int8_path, holdout: np.ndarray,
                 labels: list[int] | None = None, labels_note: str | None = None) -> QuantReport:
    """Float vs int8 on held-back images: top-1 agreement, mean |score difference| and, with
    ``labels`` (the true class of every held-back image), float and int8 top-1 accuracy."""
    if len(holdout) == 0:
        return QuantReport(images=0, top1_agreement=0.0, mean_abs_score_error=0.0,
                           max_abs_score_error=0.0, labelled=False,
                           labels_note="no held-back images")
    f, q = Classifier(float_path, num_threads=2), Classifier(int8_path, num_threads=2)
    agree, err, maxerr, f_hits, q_hits = 0, [], 0.0, 0, 0
    for i, img in enumerate(holdout):
        a, b = f(img), q(img)
        fa, qa = int(np.argmax(a)), int(np.argmax(b))
        agree += int(fa == qa)
        if labels is not None:
            f_hits += int(fa == labels[i])
            q_hits += int(qa == labels[i])
        d = np.abs(a - b)
        err.append(float(d.mean()))
        maxerr = max(maxerr, float(d.max()))
    n = len(holdout)
    return QuantReport(
        images=int(n), top1_agreement=agree / n, mean_abs_score_error=float(np.mean(err)),
        max_abs_score_error=maxerr, labelled=labels is not None, labels_note=labels_note or "",
        float_top1=None if labels is None else f_hits / n,
        int8_top1=None if labels is None else q_hits / n)


def debug_report(model, images: np.ndarray, pp: Preprocessor, worst: int = 5) -> list[dict]:
    """Per-layer quantisation error (TFLite QuantizationDebugger), the ``worst`` layers by
    RMSE in units of the layer's output quantisation step (about 0.29 is rounding alone).

    The step comes from the debugger's statistics dump (its ``scale`` column): the
    ``layer_statistics`` dict carries only the error metrics."""
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=_int8_converter(model, images, pp),
        debug_dataset=representative(images[:8], pp))
    dump = io.StringIO()
    with captured_output():
        debugger.run()
        debugger.layer_statistics_dump(dump)
    dump.seek(0)
    rows = []
    for st in csv.DictReader(dump):
        rmse = float(st.get("mean_squared_error") or 0.0) ** 0.5
        scale = float(st.get("scale") or 0.0)
        rows.append({"tensor": st["tensor_name"], "op": st.get("op_name", ""),
                     "rmse": round(rmse, 6),
                     "rmse_over_scale": round(rmse / scale, 4) if scale else None})
    rows.sort(key=lambda r: -(r["rmse_over_scale"] or 0.0))
    return rows[:worst]

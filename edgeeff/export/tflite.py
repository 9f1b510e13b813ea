"""Float32 and full-integer TFLite conversion (tf.lite.TFLiteConverter), and the quantisation report.

int8 models are full-integer: TFLITE_BUILTINS_INT8 only, uint8 input that takes raw RGB pixels,
uint8 output, batch 1 and static shapes. For the lite family the normalisation (x - 127) / 128
is folded into the input's quantisation (scale 1/128, zero point 127), so the graph starts
directly with the stem convolution (and the float32 model takes the normalised image, as TF's own
Lite models do); for the efficientnet family the per-channel normalisation stays in the graph.

The converter is run once: the float32 flatbuffer is the model_float32.tflite artifact *and* the
input of post-training quantisation (calibration, then TFLite's MLIR quantizer), which is what
TFLiteConverter does internally after its own float conversion. Should those internals move in a
future TensorFlow, the full converter path is used instead.
"""

from __future__ import annotations

import numpy as np

from edgeeff.core.preprocess import Preprocessor


def _convert(conv, what: str) -> bytes:
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.model.quiet import captured_output, tail

    log: list[str] = []
    try:
        with captured_output(log):
            return conv.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        detail = tail(log[0] if log else "", 2) or str(e).splitlines()[0]
        raise EdgeeffError(f"{what} conversion failed: {detail[:300]}") from None


def _converter(model):
    """A TFLiteConverter for a Keras model, or for a SavedModel folder (ONNX imports)."""
    import tensorflow as tf

    from edgeeff.model.quiet import captured_output

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


def quantize_float_model(float_model: bytes, images: np.ndarray, pp: Preprocessor,
                         on_sample=None) -> bytes | None:
    """Calibrate and fully quantise an already converted float32 flatbuffer (uint8 in/out).

    None when this TensorFlow lacks the calibrator/quantizer entry points used here.
    """
    try:
        import tensorflow as tf
        from tensorflow.lite.python.convert import mlir_quantize
        from tensorflow.lite.python.optimize import calibrator
    except ImportError:
        return None
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.model.quiet import captured_output, tail

    log: list[str] = []
    try:
        with captured_output(log):
            model = calibrator.add_intermediate_tensors(float_model)
            calibrated = calibrator.Calibrator(model).calibrate(
                representative(images, pp, on_sample))
            return mlir_quantize(calibrated, False, input_data_type=tf.uint8,
                                 output_data_type=tf.uint8)
    except (AttributeError, TypeError):
        return None  # internals changed: the caller falls back to the full converter
    except Exception as e:  # noqa: BLE001
        detail = tail(log[0] if log else "", 2) or str(e).splitlines()[0]
        raise EdgeeffError(f"int8 quantization failed: {detail[:300]}") from None


def _int8_converter(model, images: np.ndarray, pp: Preprocessor, on_sample=None):
    """A converter set up for full-integer quantisation (TFLITE_BUILTINS_INT8 only)."""
    import tensorflow as tf

    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative(images, pp, on_sample)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv


def convert_int8(model, images: np.ndarray, pp: Preprocessor, on_sample=None) -> bytes:
    """The full converter path: uint8 in, uint8 out (used when the shared path is unavailable)."""
    import tensorflow as tf

    conv = _int8_converter(model, images, pp, on_sample)
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    return _convert(conv, "int8")


def quant_report(float_path, int8_path, holdout: np.ndarray) -> dict:
    """Float vs int8 on held-back images: top-1 agreement and mean |score difference|."""
    from edgeeff.device.runtime import Classifier

    if len(holdout) == 0:
        return {"images": 0, "note": "no held-back images"}
    f, q = Classifier(float_path, num_threads=2), Classifier(int8_path, num_threads=2)
    agree, err, maxerr = 0, [], 0.0
    for img in holdout:
        a, b = f(img), q(img)
        agree += int(np.argmax(a) == np.argmax(b))
        d = np.abs(a - b)
        err.append(float(d.mean()))
        maxerr = max(maxerr, float(d.max()))
    return {
        "images": int(len(holdout)),
        "top1_agreement": round(agree / len(holdout), 4),
        "mean_abs_score_error": round(float(np.mean(err)), 6),
        "max_abs_score_error": round(maxerr, 6),
        "scores": "softmax probabilities",
    }


def debug_report(model, images: np.ndarray, pp: Preprocessor, worst: int = 5) -> list[dict]:
    """Per-layer quantisation error (TFLite QuantizationDebugger), the ``worst`` layers."""
    import tensorflow as tf

    from edgeeff.model.quiet import captured_output

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=_int8_converter(model, images, pp),
        debug_dataset=representative(images[:8], pp))
    with captured_output():
        debugger.run()
    rows = []
    for name, st in debugger.layer_statistics.items():
        rmse = float(st.get("mean_squared_error", 0.0)) ** 0.5
        scale = float(st.get("scale", 0.0) or 0.0)
        rows.append({"tensor": name, "rmse": round(rmse, 6),
                     "rmse_over_scale": round(rmse / scale, 4) if scale else None})
    rows.sort(key=lambda r: -(r["rmse_over_scale"] or 0.0))
    return rows[:worst]

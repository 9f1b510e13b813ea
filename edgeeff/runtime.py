"""Run exported .tflite models with whatever TFLite runtime is installed — no TensorFlow needed.

Runtimes are tried in this order: ``ai_edge_litert`` (LiteRT, the successor of tflite-runtime),
``tflite_runtime``, ``tensorflow.lite``. :class:`Classifier` turns RGB uint8 crops into class
scores using the preprocessing recorded in the model itself (edgeeff metadata) or in the
``model_card.json`` next to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeeff.errors import EdgeeffError

METADATA_NAME = "edgeeff"  # name of the JSON metadata buffer edgeeff embeds in every .tflite
EDGETPU_LIB = "libedgetpu.so.1"


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
        return Interpreter, load_delegate, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate
        return Interpreter, load_delegate, "tflite_runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf
        return tf.lite.Interpreter, tf.lite.experimental.load_delegate, "tensorflow.lite"
    except ImportError:
        raise EdgeeffError(
            "no TFLite runtime found: pip install 'edgeeff[runtime]' (ai-edge-litert)"
        ) from None


def load_interpreter(model: str | Path | bytes, num_threads: int | None = None,
                     delegate: str | None = None):
    """(interpreter, runtime name, delegate name or None), tensors allocated."""
    Interpreter, load_delegate, name = _interpreter_class()
    delegates = []
    if delegate == "edgetpu":
        try:
            delegates.append(load_delegate(EDGETPU_LIB))
        except (ValueError, OSError):
            raise EdgeeffError(
                f"EdgeTPU runtime {EDGETPU_LIB} not found: install it with "
                "'sudo apt-get install libedgetpu1-std' from Coral's apt repository "
                "(https://coral.ai/docs/accelerator/get-started/)") from None
    elif delegate not in (None, "", "none"):
        raise EdgeeffError(f"unknown delegate {delegate!r} (supported: edgetpu)")
    kw = {"num_threads": num_threads} if num_threads else {}
    try:
        if isinstance(model, (bytes, bytearray)):
            it = Interpreter(model_content=bytes(model), experimental_delegates=delegates, **kw)
        else:
            it = Interpreter(model_path=str(model), experimental_delegates=delegates, **kw)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise EdgeeffError(f"cannot load TFLite model {model if not isinstance(model, bytes) else ''}"
                           f": {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return it, name, (delegate or None)


def read_embedded_metadata(model_bytes: bytes) -> dict | None:
    """The JSON edgeeff writes into the model's metadata, if any."""
    from edgeeff import tflite_graph

    s = tflite_graph._schema()
    m = s.Model.GetRootAs(model_bytes, 0)
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        if (md.Name() or b"").decode() == METADATA_NAME:
            buf = m.Buffers(md.Buffer())
            data = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
            try:
                return json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return None
    return None


@dataclass
class InputSpec:
    """How a pixel p (0..255) reaches the model: ``(p - mean) / std`` if ``normalized``."""

    normalized: bool
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


def resolve_model_path(model: str | Path, prefer: str = "int8") -> Path:
    """A .tflite file, or the preferred model inside an export folder."""
    p = Path(model)
    if p.is_dir():
        order = ("model_int8.tflite", "model_float32.tflite") if prefer == "int8" else (
            "model_float32.tflite", "model_int8.tflite")
        for name in order:
            if (p / name).is_file():
                return p / name
        raise EdgeeffError(f"no model_int8.tflite or model_float32.tflite in {p}")
    if not p.is_file():
        raise EdgeeffError(f"model not found: {p}")
    if p.suffix != ".tflite":
        raise EdgeeffError(f"{p}: expected a .tflite file or an export folder")
    return p


class Classifier:
    """Preprocessed RGB crop in, float scores out; reuses its buffers for every frame."""

    def __init__(self, model: str | Path, num_threads: int | None = None,
                 delegate: str | None = None):
        self.path = Path(model)
        data = self.path.read_bytes()
        self.metadata = read_embedded_metadata(data) or {}
        self.interpreter, self.runtime, self.delegate = load_interpreter(
            self.path, num_threads, delegate)
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_dtype = inp["dtype"]
        self.resolution = int(inp["shape"][1])
        self.in_scale, self.in_zp = inp["quantization"]
        self.out_scale, self.out_zp = out["quantization"]
        self.num_classes = int(out["shape"][-1])
        self.labels = self._labels()
        spec = self._input_spec()
        self._lut = None
        self._float_map = None
        if self.input_dtype in (np.uint8, np.int8):
            # any pixel -> quantised-input mapping is a 256-entry table per channel
            p = np.arange(256, dtype=np.float64)[:, None].repeat(3, 1)
            if spec is None:  # no metadata: the usual convention, uint8 input = raw pixels
                q = p if self.input_dtype == np.uint8 else p - 128
            else:
                real = (p - np.array(spec.mean)) / np.array(spec.std) if spec.normalized else p
                q = np.round(real / self.in_scale + self.in_zp)
            info = np.iinfo(self.input_dtype)
            lut = np.clip(q, info.min, info.max).astype(self.input_dtype)  # (256, 3)
            ident = np.arange(256)[:, None].repeat(3, 1)
            if self.input_dtype == np.uint8 and np.array_equal(lut.astype(np.int64), ident):
                self._lut = None  # raw pixels are the input: zero-cost preprocessing
            else:
                self._lut = lut
        elif spec is not None and spec.normalized:
            self._float_map = (np.array(spec.mean, np.float32), np.array(spec.std, np.float32))
        self._buf = np.zeros((1, self.resolution, self.resolution, 3), self.input_dtype)

    @property
    def raw_pixel_input(self) -> bool:
        return self.input_dtype == np.uint8 and self._lut is None

    def _input_spec(self) -> InputSpec | None:
        """The pixel mapping recorded in the model; None when it carries no edgeeff metadata."""
        md = self.metadata.get("input") or {}
        if md:
            return InputSpec(bool(md.get("normalized")), tuple(md.get("mean", (0, 0, 0))),
                             tuple(md.get("std", (1, 1, 1))))
        return None

    def _labels(self) -> list[str]:
        labels = self.metadata.get("labels")
        if not labels:
            f = self.path.parent / "labels.txt"
            if f.is_file():
                labels = f.read_text(encoding="utf-8").splitlines()
        if not labels or len(labels) != self.num_classes:
            labels = [f"class_{i}" for i in range(self.num_classes)]
        return labels

    def set_input(self, rgb: np.ndarray) -> None:
        if self._lut is not None:
            self._buf[0] = np.take_along_axis(self._lut, rgb.reshape(-1, 3).astype(np.intp),
                                              0).reshape(rgb.shape)
        elif self._float_map is not None:
            mean, std = self._float_map
            np.subtract(rgb, mean, out=self._buf[0])
            self._buf[0] /= std
        else:
            self._buf[0] = rgb

    def invoke(self) -> np.ndarray:
        self.interpreter.set_tensor(self._in_index, self._buf)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._out_index)[0]
        if out.dtype in (np.uint8, np.int8):
            return (out.astype(np.float32) - self.out_zp) * self.out_scale
        return out.astype(np.float32)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.set_input(rgb)
        return self.invoke()

    def top_k(self, scores: np.ndarray, k: int = 3) -> list[dict]:
        idx = np.argsort(-scores)[:k]
        return [{"index": int(i), "label": self.labels[i], "score": round(float(scores[i]), 4)}
                for i in idx]

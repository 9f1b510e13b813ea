"""Run exported .tflite models with whatever TFLite runtime is installed — no TensorFlow needed.

Runtimes are tried in this order: ``ai_edge_litert`` (LiteRT, the successor of tflite-runtime),
then ``tflite_runtime``; TensorFlow is never imported here. :class:`Classifier` turns RGB
uint8 crops into class scores with the :class:`Preprocessor` recorded in the model's edgeeff
metadata (raw pixels when there is none), and labels from the metadata or ``labels.txt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import raise_if_interrupted
from edgeeff.core.optional import MissingExtra
from edgeeff.core.preprocess import Preprocessor
from edgeeff.core.topk import topk
from edgeeff.device import delegate_probe
from edgeeff.tflite import reader


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
        raise MissingExtra("ai_edge_litert", "running .tflite models") from None


def runtime_info() -> tuple[str, str]:
    """(module name, installed version) of the TFLite runtime :func:`load_interpreter` uses,
    e.g. ``("ai_edge_litert", "2.3.0")``; the version is empty where the distribution's
    metadata is missing. EdgeeffError when no runtime is installed."""
    _, _, name = _interpreter_class()
    for dist in (name.replace("_", "-"), name):
        try:
            return name, version(dist)
        except PackageNotFoundError:
            continue
    return name, ""


_SAID: set[tuple[str, ...]] = set()


def warn_collapsed(names: list[str], action: str, log=None) -> None:
    """Say once per process (per model's collapsed tensors) the :func:`collapsed_note` line,
    through ``log`` or on stderr."""
    if tuple(names) in _SAID:
        return
    _SAID.add(tuple(names))
    line = collapsed_note(names, action)
    if log is None:
        print(line, file=sys.stderr)
    else:
        log(line)


def collapsed_note(names: list[str], action: str) -> str:
    """The one line saying a model's activations collapsed, and what edgeeff does about it."""
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return (f"edgeeff: warning: the model's int8 activations are all about 0 at "
            f"{names[0].split(';')[0]}"
            f"{more} (a scale under {reader.COLLAPSED_SCALE:g}: the trained model's values "
            f"collapsed there, a dead layer; retrain it); {action}")


def load_interpreter(model: str | Path | bytes, num_threads: int | None = None,
                     delegate: str | None = None, verified: bool = False):
    """(interpreter, runtime name, delegate name or None), tensors allocated. The model is
    verified before any interpreter sees it, unless the caller already did (``verified``)."""
    if isinstance(model, (bytes, bytearray)):
        data = bytes(model)
        if not verified:
            reader.verify(data)
    else:
        data = Path(model).read_bytes() if verified else reader.read_model_file(model)
    Interpreter, load_delegate, name = _interpreter_class()
    kw = {"num_threads": num_threads} if num_threads else {}
    if delegate in (None, "", "none"):
        collapsed = reader.collapsed_activations(reader.read(data, verified=True))
        resolvers = getattr(sys.modules[Interpreter.__module__], "OpResolverType", None)
        if collapsed and resolvers is not None:  # XNNPACK aborts on them: TFLite's kernels
            kw["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            warn_collapsed(collapsed, "edgeeff runs it without XNNPACK, which cannot")
    delegates = []
    if delegate == "edgetpu":
        lib = delegate_probe.edgetpu_lib()
        delegate_probe.probe(name, lib)  # in a child first: a mismatched libedgetpu segfaults
        try:
            delegates.append(load_delegate(lib))
        except (ValueError, OSError):
            raise EdgeeffError(
                f"EdgeTPU runtime {lib} not found: install it with "
                "'sudo apt-get install libedgetpu1-std' from Coral's apt repository "
                "(https://coral.ai/docs/accelerator/get-started/)") from None
    elif delegate not in (None, "", "none"):
        raise EdgeeffError(f"unknown delegate {delegate!r} (supported: edgetpu)")
    try:
        with runtime_log_filtered():
            if isinstance(model, (bytes, bytearray)):
                it = Interpreter(model_content=bytes(model), experimental_delegates=delegates,
                                 **kw)
            else:
                it = Interpreter(model_path=str(model), experimental_delegates=delegates, **kw)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise_if_interrupted()
        raise EdgeeffError(f"cannot load TFLite model {model if not isinstance(model, bytes) else ''}"
                           f": {_load_error(str(e)) or type(e).__name__}") from None
    return it, name, (delegate or None)


@contextlib.contextmanager
def runtime_log_filtered():
    """File descriptor 2 goes to a temporary file for the block, and afterwards every line of
    it except the runtime's ``INFO:`` lines goes to stderr.

    The TFLite runtime's C++ logger writes "INFO: Created TensorFlow Lite XNNPACK delegate for
    CPU." straight to fd 2 when an interpreter is made, before any error edgeeff may then
    print (an error is one line on stderr). Warnings and errors it prints still show.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        log = tempfile.TemporaryFile()
    except OSError:  # no usable fd 2 (closed): nothing to keep apart
        yield
        return
    try:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
        log.seek(0)
        kept = [ln for ln in log.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not ln.startswith("INFO: ")]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
    finally:
        os.close(saved)
        log.close()


_RUNTIME_TOO_OLD = re.compile(r"requires runtime version \((\d+)\), which is newer than this "
                              r"runtime version \((\d+)\)")


def _load_error(message: str) -> str:
    """The first line of a runtime's load error, with what to do where edgeeff knows it."""
    m = _RUNTIME_TOO_OLD.search(message)
    if m is not None:  # libedgetpu older than the runtime the model was compiled for
        need, have = m.groups()
        return (f"the model was compiled for Edge TPU runtime {need}, this libedgetpu is "
                f"runtime {have}: re-export with 'edgeeff export --format edgetpu "
                f"--edgetpu-runtime {have}', or update libedgetpu (sudo apt-get install "
                "libedgetpu1-std)")
    return next((ln.strip() for ln in message.splitlines() if ln.strip()), "")


def read_embedded_metadata(model_bytes: bytes, verified: bool = False) -> dict | None:
    """The JSON edgeeff writes into the model's metadata, if any."""
    data = reader.metadata_buffer(model_bytes, artifacts.METADATA_NAME,
                                        verified=verified)
    if not data:
        return None
    try:
        md = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return md if isinstance(md, dict) else None


def resolve_model_path(model: str | Path, prefer: str = "int8", delegate: str | None = None
                       ) -> Path:
    """A .tflite file, or the preferred model inside an export folder (the compiled
    ``*_edgetpu.tflite`` for ``delegate="edgetpu"``)."""
    p = Path(model)
    if delegate == "edgetpu":
        path = p / artifacts.EDGETPU_MODEL if p.is_dir() else p
        if not path.is_file() or not path.name.endswith(artifacts.EDGETPU_SUFFIX):
            raise EdgeeffError(f"--delegate edgetpu needs a compiled *{artifacts.EDGETPU_SUFFIX} model "
                               f"({path} not found): run 'edgeeff export --format edgetpu' where "
                               "edgetpu_compiler is installed")
        return path
    if p.is_dir():
        order = artifacts.MODEL_PREFERENCE[prefer]
        for name in order:
            if (p / name).is_file():
                return p / name
        raise EdgeeffError(f"no {' or '.join(order)} in {p}")
    if not p.is_file():
        raise EdgeeffError(f"model not found: {p}")
    if p.suffix != artifacts.TFLITE_SUFFIX:
        raise EdgeeffError(f"{p}: expected a .tflite file or an export folder")
    return p


def _classifier_io(path: Path, interpreter) -> tuple[dict, dict]:
    """(input, output) details of an image classifier: [1, R, R, 3] in, [1, N] out."""
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise reader.NotAClassifierError(path, f"{len(ins)} inputs and {len(outs)} outputs, expected 1 and 1")
    inp, out = ins[0], outs[0]
    shape, oshape = [int(d) for d in inp["shape"]], [int(d) for d in out["shape"]]
    if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[1] < 1 or shape[3] != 3:
        raise reader.NotAClassifierError(path, f"input shape {shape}, expected [1, R, R, 3]")
    if len(oshape) != 2 or oshape[0] != 1 or oshape[1] < 1:
        raise reader.NotAClassifierError(path, f"output shape {oshape}, expected [1, classes]")
    kinds = (np.uint8, np.int8, np.float16, np.float32)
    if inp["dtype"] not in kinds or out["dtype"] not in kinds:
        raise reader.NotAClassifierError(path, f"{np.dtype(inp['dtype']).name} input and "
                                        f"{np.dtype(out['dtype']).name} output, expected "
                                        "uint8, int8 or float")
    return inp, out


class Classifier:
    """Preprocessed RGB crop in, float scores out; reuses its buffers for every frame."""

    def __init__(self, model: str | Path, num_threads: int | None = None,
                 delegate: str | None = None):
        self.path = Path(model)
        self.num_threads = num_threads  # None: the runtime's default (one thread)
        data = reader.read_model_file(self.path)  # verified once: ModelFileError if damaged
        self.metadata = read_embedded_metadata(data, verified=True) or {}
        self.interpreter, self.runtime, self.delegate = load_interpreter(
            self.path, num_threads, delegate, verified=True)
        inp, out = _classifier_io(self.path, self.interpreter)
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_dtype = inp["dtype"]
        self.resolution = int(inp["shape"][1])
        self.in_scale, self.in_zp = inp["quantization"]
        self.out_scale, self.out_zp = out["quantization"]
        self.num_classes = int(out["shape"][-1])
        self.labels = self._labels()
        if self.metadata.get("input"):
            self.preprocessor = self._preprocessor().bind(self.input_dtype, self.in_scale,
                                                          self.in_zp)
        else:  # no edgeeff metadata: the usual convention, a uint8 input takes raw pixels
            self.preprocessor = Preprocessor(self.resolution).bind(self.input_dtype)
        self._lut = self.preprocessor.lut()
        self._buf = np.zeros((1, self.resolution, self.resolution, 3), self.input_dtype)

    @property
    def raw_pixel_input(self) -> bool:
        return self.input_dtype == np.uint8 and self._lut is None

    def _preprocessor(self) -> Preprocessor:
        """The preprocessing recorded in the model's edgeeff metadata."""
        md = self.metadata.get("input") or {}
        try:
            return Preprocessor.from_dict(md, self.resolution).with_resolution(self.resolution)
        except (ValueError, TypeError):
            return Preprocessor(self.resolution)

    def _labels(self) -> list[str]:
        labels = self.metadata.get("labels")
        if not labels:
            f = self.path.parent / artifacts.LABELS
            if f.is_file():
                labels = f.read_text(encoding="utf-8").splitlines()
        if not labels or len(labels) != self.num_classes:
            labels = [f"class_{i}" for i in range(self.num_classes)]
        return labels

    def set_input(self, rgb: np.ndarray) -> None:
        self.preprocessor.to_input(rgb, self._buf[0], self._lut)

    def invoke(self, tensor: np.ndarray | None = None) -> np.ndarray:
        """Scores of the input :meth:`set_input` wrote, or of ``tensor``: a ``[1, R, R, 3]``
        input already in the model's dtype and values (:meth:`Preprocessor.to_input` made it,
        e.g. on the demo's capture thread)."""
        self.interpreter.set_tensor(self._in_index, self._buf if tensor is None else tensor)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._out_index)[0]
        if out.dtype in (np.uint8, np.int8):
            return (out.astype(np.float32) - self.out_zp) * self.out_scale
        return out.astype(np.float32)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.set_input(rgb)
        return self.invoke()

    def top_k(self, scores: np.ndarray, k: int = 3) -> list[dict]:
        idx = topk(scores, k)  # ties: the lower class index, on every machine
        return [{"index": int(i), "label": self.labels[i], "score": round(float(scores[i]), 4)}
                for i in idx]

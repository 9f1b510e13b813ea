"""ONNX in: an ONNX image classifier -> TensorFlow (onnx2tf) -> the same TFLite pipeline.

onnx2tf turns the NCHW ONNX graph into an NHWC TensorFlow SavedModel; from there the model is
converted, calibrated, reported on and packaged exactly like a model edgeeff built itself.

onnx2tf validates its conversion on a sample batch it would otherwise download; edgeeff
writes that batch itself, from the calibration photos, into onnx2tf's working folder, so the
import works offline.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import raise_if_interrupted
from edgeeff.core.optional import require
from edgeeff.core.preprocess import Preprocessor
from edgeeff.export.frontend import Frontend
from edgeeff.model.calibrate import load_calibration
from edgeeff.model.quiet import captured_output, tail

ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
ONNXSIM_HINT = ("onnx2tf simplifies the graph first when the onnxsim command is installed, which "
                "fixes many such failures (PyTorch's 'same' padding among them): pip install "
                "onnxsim")


def conversion_error(path, detail: str) -> EdgeeffError:
    """onnx2tf's failure in one line, with the onnxsim hint when that command is missing."""
    hint = "" if shutil.which("onnxsim") else f" ({ONNXSIM_HINT})"
    detail = " | ".join(ln.strip() for ln in detail.splitlines() if ln.strip())
    return EdgeeffError(f"onnx2tf could not convert {path}: {detail[:300]}{hint}")


@contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _sample_batch(calib_dir: str | None) -> np.ndarray:
    cs = load_calibration(calib_dir, Preprocessor(128), num=20, holdout=False)
    x = cs.images.astype(np.float32) / 255.0
    reps = int(np.ceil(20 / len(x)))
    return np.concatenate([x] * reps)[:20]


def _parse_norm(text: str | None, default: float, what: str) -> list[float]:
    if text is None:
        return [default] * 3
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise EdgeeffError(f"{what} must be one number or three comma-separated numbers") from None
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals) or (
            what == "--std" and any(v <= 0 for v in vals)):
        raise EdgeeffError(f"{what} must be one number or three (positive for --std)")
    return vals


def load(path: str, calib_dir: str | None = None, mean: str | None = None,
         std: str | None = None, workdir: Path | None = None) -> Frontend:
    """A Frontend for the ONNX model at ``path``; ``mean``/``std`` in 0..255 pixel units."""
    onnx = require("onnx", "--from (ONNX import)")
    p = Path(path).resolve()  # before onnx2tf runs in its own working folder
    if not p.is_file():
        raise EdgeeffError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - onnx raises several types
        raise_if_interrupted()
        raise EdgeeffError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0][:200]})"
                           ) from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise EdgeeffError(f"{path}: expected one image input, found {len(inputs)}")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3] or dims[2] <= 0:
        raise EdgeeffError(f"{path}: expected a static NCHW input [1, 3, S, S], got {dims}")
    m, s = _parse_norm(mean, 0.0, "--mean"), _parse_norm(std, 1.0, "--std")
    normalized = m != [0.0] * 3 or s != [1.0] * 3
    work = Path(workdir or tempfile.mkdtemp(prefix="edgeeff-onnx2tf-"))
    np.save(work / ONNX2TF_SAMPLE, _sample_batch(calib_dir))
    # onnx2tf rewrites the file it converts (shape inference, onnxsim in place): give it a copy
    copy = work / "input" / p.name
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(p, copy)
    log: list[str] = []
    onnx2tf = require("onnx2tf", "--from (ONNX import)")
    try:
        with _cwd(work), captured_output(log):
            onnx2tf.convert(input_onnx_file_path=str(copy),
                            output_folder_path=str(work / "saved_model"),
                            output_signaturedefs=True, non_verbose=True)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - onnx2tf calls sys.exit on failure
        raise_if_interrupted()
        detail = tail(log[0] if log else "", 2) or (str(e).splitlines() or [type(e).__name__])[0]
        raise conversion_error(path, detail) from None
    saved = work / "saved_model"
    if not (saved / "saved_model.pb").is_file():
        raise EdgeeffError(f"onnx2tf wrote no SavedModel for {path}")
    outs = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    num_classes = int(outs[-1]) if outs and outs[-1] > 0 else 0
    if num_classes < 1:
        raise EdgeeffError(f"{path}: the output has no static class dimension ({outs})")
    return Frontend(
        name=p.stem, num_classes=num_classes, model=str(saved),
        preprocessor=Preprocessor(int(dims[2]), m, s, normalized),
        weights=f"from {p.name}", spec=None,
        source={"onnx": p.name, "converted_with": "onnx2tf", "layout": "NCHW -> NHWC"},
    )

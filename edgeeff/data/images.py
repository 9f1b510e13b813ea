"""Image files and camera frames to model-ready pixels, with OpenCV (no TensorFlow).

OpenCV is the ``runtime`` extra: it is imported when a function first decodes or resizes, so
listing images and importing this module need only numpy.

Every function applies the geometry of one :class:`~edgeeff.core.preprocess.Preprocessor`
(shorter side to ``resolution / crop_fraction``, centre crop, RGB), so calibration, training,
evaluation and the demo feed a model identical pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeeff.core.optional import require
from edgeeff.core.preprocess import Preprocessor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _cv2():
    return require("cv2", "decoding and resizing images")


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` (recursively), sorted for reproducibility."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_bgr(path: str | os.PathLike) -> np.ndarray | None:
    """HxWx3 BGR uint8 (OpenCV's order, as cameras deliver it), or None if undecodable.

    Grayscale, palette, alpha, 16-bit and CMYK files all come back as 8-bit colour.
    """
    cv2 = _cv2()
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)  # drops alpha, expands gray, converts CMYK


def load_rgb(path: str | os.PathLike) -> np.ndarray | None:
    """HxWx3 RGB uint8, or None when the file cannot be decoded (see :func:`load_bgr`)."""
    cv2 = _cv2()
    img = load_bgr(path)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize_crop(img: np.ndarray, pp: Preprocessor, crop: int | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
    """Resize the shorter side to ``pp.shorter_side`` and centre-crop a ``crop`` square
    (default ``pp.resolution``; training keeps the whole ``shorter_side`` square to take
    random crops from). Channel order is kept."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    nh, nw, scale = pp.resize_to(h, w)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(img, (nw, nh), interpolation=interp)
    r = pp.resolution
    c = r if crop is None else crop
    # a larger square is placed so that its own centre r-crop is exactly the r-crop here
    y = min(max(0, (nh - r) // 2 - (c - r) // 2), nh - c)
    x = min(max(0, (nw - r) // 2 - (c - r) // 2), nw - c)
    cropped = resized[y:y + c, x:x + c]
    if out is None:
        return np.ascontiguousarray(cropped)
    out[...] = cropped
    return out


def load_preprocessed(path: str | os.PathLike, pp: Preprocessor) -> np.ndarray | None:
    """An image file as the model's RGB uint8 crop, or None when it cannot be decoded."""
    img = load_rgb(path)
    return None if img is None else resize_crop(img, pp)


def frame_into(frame_bgr: np.ndarray, pp: Preprocessor, out_rgb: np.ndarray,
               scratch: np.ndarray | None = None) -> np.ndarray:
    """Camera frame (BGR) -> model crop (RGB), written into ``out_rgb``: the same pixels as
    :func:`load_preprocessed` gives for the same image."""
    cv2 = _cv2()
    if scratch is None:
        scratch = np.empty_like(out_rgb)
    resize_crop(frame_bgr, pp, out=scratch)
    cv2.cvtColor(scratch, cv2.COLOR_BGR2RGB, dst=out_rgb)
    return out_rgb

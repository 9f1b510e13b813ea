"""Image files to model-ready pixels, identically for calibration, evaluation and the demo.

OpenCV only (no TensorFlow), so the TensorFlow-free runtime uses the very same code.
Preprocessing: resize the shorter side to ``resolution / 0.875`` (INTER_AREA when shrinking,
which antialiases; INTER_CUBIC when enlarging), centre-crop ``resolution``, RGB uint8.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CROP_FRACTION = 0.875
RESIZER = "opencv INTER_AREA when shrinking, INTER_CUBIC when enlarging"


def preprocessing_record(resolution: int, mean=None, std=None) -> dict:
    """How pixels reach a model, as spec files, model cards and calibration records state it.

    ``mean``/``std`` (pixel units) describe the model's normalisation when it has one.
    """
    rec = {
        "color": "RGB",
        "resize_shorter_side": int(round(resolution / CROP_FRACTION)),
        "center_crop": int(resolution),
        "resizer": RESIZER,
        "input_range": [0, 255],
    }
    if mean is not None:
        rec["mean"] = [round(float(m), 4) for m in mean]
        rec["std"] = [round(float(s), 4) for s in std]
    return rec


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` (recursively), sorted for reproducibility."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_bgr(path: str | os.PathLike) -> np.ndarray | None:
    """HxWx3 BGR uint8 (OpenCV's order, as cameras deliver it), or None if undecodable.

    Grayscale, palette, alpha, 16-bit and CMYK files all come back as 8-bit colour.
    """
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)  # drops alpha, expands gray, converts CMYK


def load_rgb(path: str | os.PathLike) -> np.ndarray | None:
    """HxWx3 RGB uint8, or None when the file cannot be decoded (see :func:`load_bgr`)."""
    import cv2

    img = load_bgr(path)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize_crop(img: np.ndarray, resolution: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resize the shorter side to resolution/0.875 and centre-crop ``resolution`` square."""
    import cv2

    h, w = img.shape[:2]
    short = int(round(resolution / CROP_FRACTION))
    scale = short / min(h, w)
    nh, nw = max(resolution, int(round(h * scale))), max(resolution, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(img, (nw, nh), interpolation=interp)
    y, x = (nh - resolution) // 2, (nw - resolution) // 2
    crop = resized[y:y + resolution, x:x + resolution]
    if out is None:
        return np.ascontiguousarray(crop)
    out[...] = crop
    return out


def load_preprocessed(path: str | os.PathLike, resolution: int) -> np.ndarray | None:
    img = load_rgb(path)
    return None if img is None else resize_crop(img, resolution)


def center_box(h: int, w: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the centre square the resize-shorter-side + crop keeps."""
    side = int(round(min(h, w) * CROP_FRACTION))
    y, x = (h - side) // 2, (w - side) // 2
    return y, y + side, x, x + side


def frame_into(frame_bgr: np.ndarray, out_rgb: np.ndarray, scratch: np.ndarray | None = None
               ) -> np.ndarray:
    """Camera frame (BGR) -> model input (RGB), written into ``out_rgb`` without new arrays.

    Crops the centre square first and resizes only that (the same pixels the resize-then-crop
    of :func:`resize_crop` keeps), then swaps channels in place.
    """
    import cv2

    r = out_rgb.shape[0]
    y0, y1, x0, x1 = center_box(*frame_bgr.shape[:2])
    crop = frame_bgr[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if crop.shape[0] > r else cv2.INTER_CUBIC
    if scratch is None:
        scratch = np.empty_like(out_rgb)
    cv2.resize(crop, (r, r), dst=scratch, interpolation=interp)
    cv2.cvtColor(scratch, cv2.COLOR_BGR2RGB, dst=out_rgb)
    return out_rgb

"""Image files and camera frames to model-ready pixels, with OpenCV (no TensorFlow).

OpenCV is the ``runtime`` extra: it is imported when a function first decodes or resizes, so
listing images and importing this module need only numpy.

Every function applies the geometry of one :class:`~edgeeff.core.preprocess.Preprocessor`
(shorter side to ``resolution / crop_fraction``, centre crop, RGB), so calibration, training,
evaluation and the demo feed a model identical pixels.

:func:`load_bgr` is the one decoder of image files: every reader (eval, export's calibration,
train, tune, the demo's folder source) goes through it. It reads the width and height from the
file's own header (PNG IHDR, JPEG SOFn, BMP, WebP VP8/VP8L/VP8X) *before* decoding, and refuses a
file whose pixel count exceeds the budget (:data:`MAX_PIXELS` unless ``--max-pixels`` says
otherwise), a file larger than any image within the budget needs, and a format whose size it
cannot read: a decompression bomb (a few KB declaring 100000x100000 pixels) is an unreadable
image like a truncated one, skipped and counted by the caller, and never allocated. OpenCV has
no header-only API (its own ``OPENCV_IO_MAX_IMAGE_PIXELS`` cap is 2^30 pixels, read once per
process, and is reported by raising), and Pillow is not a runtime dependency, hence the small
parser here.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from edgeeff.core.optional import require
from edgeeff.core.preprocess import Preprocessor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

# The default pixel budget of one image file (width x height from its header): 40 megapixels,
# more than any phone or DSLR photo of the datasets a classifier is trained on, and about
# 120 MB decoded (BGR). ``--max-pixels`` raises it for the commands that read image folders.
MAX_PIXELS = 40_000_000
# bytes per pixel of budget a file may take on disk (an uncompressed 32-bit BMP), plus room for
# metadata: a larger file holds no image within the budget, so it is not even read
_BYTES_PER_PIXEL = 4
_METADATA_BYTES = 16 * 1024 * 1024

_max_pixels = MAX_PIXELS


def set_max_pixels(n: int | None) -> None:
    """The process's pixel budget per image (None: :data:`MAX_PIXELS`). Set once by the CLI's
    ``--max-pixels`` before any image is read; a process-wide value so that the decoding
    threads of ``train`` and the calibration inside ``export`` see it without each caller
    passing it down."""
    global _max_pixels
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"the pixel budget must be a positive whole number, got {n!r}")
    _max_pixels = MAX_PIXELS if n is None else n


def max_pixels() -> int:
    """The pixel budget per image now in force (see :func:`set_max_pixels`)."""
    return _max_pixels


def unreadable_note(n: int, folder: str | os.PathLike) -> str:
    """The one line every reader of an image folder reports its skipped files with."""
    return (f"skipped {n} unreadable image file(s) under {folder} (damaged, not an image, or "
            f"over the {_max_pixels / 1e6:g}-megapixel budget: --max-pixels)")


def image_size(data) -> tuple[int, int] | None:
    """``(width, height)`` read from the header of an encoded PNG, JPEG, BMP or WebP image
    (bytes or a uint8 buffer), or None when the header is not one of them or is damaged. Reads
    only the header: nothing is decoded or allocated."""
    buf = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    n = len(buf)
    try:
        if bytes(buf[:8]) == b"\x89PNG\r\n\x1a\n":
            if n < 24 or bytes(buf[12:16]) != b"IHDR":
                return None
            return struct.unpack_from(">II", buf, 16)
        if bytes(buf[:2]) == b"\xff\xd8":
            return _jpeg_size(buf)
        if bytes(buf[:2]) == b"BM" and n >= 26:
            header = struct.unpack_from("<I", buf, 14)[0]
            if header == 12:
                return struct.unpack_from("<HH", buf, 18)
            w, h = struct.unpack_from("<ii", buf, 18)
            return abs(w), abs(h)
        if bytes(buf[:4]) == b"RIFF" and bytes(buf[8:12]) == b"WEBP" and n >= 30:
            return _webp_size(buf)
    except struct.error:
        return None
    return None


# JPEG start-of-frame markers (every coding process); C4 (DHT), C8 (JPG) and CC (DAC) are not
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(buf) -> tuple[int, int] | None:
    """Walk the marker segments (APPn/EXIF thumbnails are skipped whole) to the first SOFn."""
    i, n = 2, len(buf)
    while i + 4 <= n:
        if buf[i] != 0xFF:
            return None
        m = buf[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
            i += 2
            continue
        if m in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = struct.unpack_from(">H", buf, i + 2)[0]
        if m in _SOF:
            h, w = struct.unpack_from(">HH", buf, i + 5)
            return (w, h) if h else None  # height 0 (set by a later DNL): not supported
        if length < 2:
            return None
        i += 2 + length
    return None


def _webp_size(buf) -> tuple[int, int] | None:
    chunk = bytes(buf[12:16])
    if chunk == b"VP8 ":
        if bytes(buf[23:26]) != b"\x9d\x01\x2a":
            return None
        w, h = struct.unpack_from("<HH", buf, 26)
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        if buf[20] != 0x2F:
            return None
        b = struct.unpack_from("<I", buf, 21)[0]
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(bytes(buf[24:27]), "little") + 1
        h = int.from_bytes(bytes(buf[27:30]), "little") + 1
        return w, h
    return None


def _cv2():
    return require("cv2", "decoding and resizing images")


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` (recursively), sorted for reproducibility."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_bgr(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray | None:
    """HxWx3 BGR uint8 (OpenCV's order, as cameras deliver it), or None if undecodable.

    Grayscale, palette, alpha, 16-bit and CMYK files all come back as 8-bit colour. The one
    decoder of image files (see the module docstring): a file whose header declares more than
    ``max_pixels`` pixels (default: the process's budget, :func:`max_pixels`), whose size no
    image within the budget needs, or whose header is not PNG, JPEG, BMP or WebP is None
    without being decoded; so is anything OpenCV refuses.
    """
    cv2 = _cv2()
    budget = _max_pixels if max_pixels is None else max_pixels
    try:
        if os.path.getsize(path) > budget * _BYTES_PER_PIXEL + _METADATA_BYTES:
            return None
        data = np.fromfile(str(path), dtype=np.uint8)
    except (OSError, ValueError):
        return None
    size = image_size(data) if data.size else None
    if size is None or not 0 < size[0] * size[1] <= budget:
        return None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # drops alpha, expands gray, converts CMYK
    except cv2.error:
        return None
    return img if img is not None and img.size else None


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

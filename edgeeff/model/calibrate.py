"""Calibration as its own step: pick, decode and preprocess real images, once.

Every calibration run is described by a record (count, content hash, preprocessing, skipped
files) that ends up in the model card, so an int8 model can always be traced to its data.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeeff.core.data import data_dir
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.preprocess import Preprocessor
from edgeeff.device.images import list_images, load_rgb, resize_crop

HOLDOUT_EVERY = 5  # every 5th image is held back to compare float and int8 outputs


@dataclass
class CalibrationSet:
    images: np.ndarray  # (N, r, r, 3) uint8 used by the converter
    holdout: np.ndarray  # (M, r, r, 3) uint8 used only for the quantisation report
    files: list[str]
    holdout_files: list[str]
    source: str
    sha256: str  # over the raw bytes of every file used, in order
    preprocessor: Preprocessor | None = None
    skipped: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {
            "source": self.source,
            "count": int(len(self.images)),
            "holdout_count": int(len(self.holdout)),
            "sha256": self.sha256,
            "skipped_unreadable": len(self.skipped),
            "preprocessing": self.preprocessor.to_dict() if self.preprocessor else None,
        }


def default_dir() -> Path:
    return data_dir("calibration")


def load_calibration(folder: str | Path | None, pp: Preprocessor, num: int = 100,
                     holdout: bool = True, warn_short: int | None = None) -> CalibrationSet:
    """Up to ``num`` calibration images (plus held-back ones) from ``folder``, as ``pp`` crops
    them (RGB uint8; the converter applies the model's normalisation).

    Unreadable files are skipped and counted; fewer usable images than ``warn_short`` (the
    count a user asked for) warns; none at all is an error.
    """
    if num < 1:
        raise EdgeeffError(f"--num-calib must be >= 1, got {num}")
    folder = Path(folder) if folder is not None else default_dir()
    if not folder.is_dir():
        raise EdgeeffError(f"calibration folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise EdgeeffError(f"no images (jpg/png/bmp/webp) under {folder}")
    calib, held, calib_files, held_files, skipped = [], [], [], [], []
    digest = hashlib.sha256()
    usable = 0
    for p in files:
        if len(calib) >= num and (not holdout or len(held) >= max(1, num // (HOLDOUT_EVERY - 1))):
            break
        img = load_rgb(p)
        if img is None:
            skipped.append(str(p))
            continue
        digest.update(p.read_bytes())
        usable += 1
        x = resize_crop(img, pp)
        if holdout and usable % HOLDOUT_EVERY == 0:
            held.append(x)
            held_files.append(str(p))
        elif len(calib) < num:
            calib.append(x)
            calib_files.append(str(p))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s) under {folder}",
                      stacklevel=2)
    if not calib:
        raise EdgeeffError(f"no usable calibration images under {folder} "
                           f"({len(skipped)} unreadable)")
    if warn_short and len(calib) < warn_short:
        warnings.warn(f"only {len(calib)} usable calibration images under {folder} "
                      f"(--num-calib {warn_short})", stacklevel=2)
    r = pp.resolution
    return CalibrationSet(
        images=np.stack(calib),
        holdout=np.stack(held) if held else np.zeros((0, r, r, 3), np.uint8),
        files=calib_files, holdout_files=held_files, source=str(folder),
        sha256=digest.hexdigest(), preprocessor=pp, skipped=skipped,
    )

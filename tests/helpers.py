"""Small helpers shared by tests and benchmarks (no pytest imports, so benchmarks can use them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def crops(photos: list[Path], out: Path, per_class: int, seed: int) -> Path:
    """Random square crops (50-80 % of the shorter side) of each photo: one class folder per
    photo, named after the photo's ImageNet class."""
    import cv2

    rng = np.random.default_rng(seed)
    for p in photos:
        img = cv2.imread(str(p))
        h, w = img.shape[:2]
        d = out / p.stem.split("_", 1)[1]
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            s = int(min(h, w) * rng.uniform(0.5, 0.8))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            cv2.imwrite(str(d / f"{k}.jpg"), img[y:y + s, x:x + s])
    return out


def strings(x):
    """Every string in a JSON-like value, dict keys included."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from strings(v)
    elif isinstance(x, str):
        yield x

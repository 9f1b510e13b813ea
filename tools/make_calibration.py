"""Rebuild ``calibration/`` from public-domain / CC0 / CC-BY photos shipped inside PyPI wheels.

How it was made (offline, no download at run time):

    pip download --no-deps scikit-image==0.26.0 scikit-learn==1.9.1 matplotlib==3.11.2 -d wheels
    python tools/make_calibration.py wheels calibration

Each source photo gives four crops (the whole frame and three regions at other scales), resized
so the longer side is 320 px and stored as JPEG (quality 90). ``coins`` stays grayscale on purpose:
loaders must convert it. The manifest (calibration/MANIFEST.json) lists every file's source,
licence, crop box and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np

SOURCES = [
    # (wheel prefix, member, short name, licence, credit)
    ("scikit_image", "skimage/data/astronaut.png", "astronaut", "Public domain",
     "NASA, Eileen Collins (via scikit-image)"),
    ("scikit_image", "skimage/data/chelsea.png", "chelsea", "CC0",
     "Stefan van der Walt, Chelsea the cat (via scikit-image)"),
    ("scikit_image", "skimage/data/coffee.png", "coffee", "CC0",
     "Rachel Michetti, Pikolo Espresso Bar (via scikit-image)"),
    ("scikit_image", "skimage/data/rocket.jpg", "rocket", "Public domain",
     "SpaceX, DSCOVR launch on Falcon 9 (via scikit-image)"),
    ("scikit_image", "skimage/data/hubble_deep_field.jpg", "hubble", "Public domain",
     "NASA/ESA Hubble eXtreme Deep Field (via scikit-image)"),
    ("scikit_image", "skimage/data/coins.png", "coins", "No known copyright restrictions",
     "Brooklyn Museum collection, Greek coins from Pompeii (via scikit-image)"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "grace_hopper",
     "Public domain", "US Navy, Rear Admiral Grace Hopper (via matplotlib)"),
    ("scikit_learn", "sklearn/datasets/images/china.jpg", "china", "CC BY 2.0",
     "danielbuechele on Flickr (via scikit-learn)"),
    ("scikit_learn", "sklearn/datasets/images/flower.jpg", "flower", "CC BY 2.0",
     "vultilion on Flickr (via scikit-learn)"),
]
# crop boxes as fractions (x0, y0, x1, y1) of the source frame
CROPS = [(0.0, 0.0, 1.0, 1.0), (0.15, 0.1, 0.75, 0.8), (0.4, 0.3, 1.0, 1.0), (0.0, 0.35, 0.6, 1.0)]
LONG_SIDE = 320


def main(wheels: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for prefix, member, short, licence, credit in SOURCES:
        whl = next(wheels.glob(f"{prefix}-*.whl"))
        data = zipfile.ZipFile(whl).read(member)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        h, w = img.shape[:2]
        for i, (x0, y0, x1, y1) in enumerate(CROPS):
            crop = img[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]
            ch, cw = crop.shape[:2]
            s = LONG_SIDE / max(ch, cw)
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
            crop = cv2.resize(crop, (round(cw * s), round(ch * s)), interpolation=interp)
            ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            name = f"{short}_{i}.jpg"
            (out / name).write_bytes(buf.tobytes())
            manifest.append({"file": name, "source": f"{whl.name}:{member}", "licence": licence,
                             "credit": credit, "crop": [x0, y0, x1, y1],
                             "sha256": hashlib.sha256(buf.tobytes()).hexdigest()})
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(manifest)} images to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

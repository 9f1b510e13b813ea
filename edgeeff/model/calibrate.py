"""Calibration as its own step: pick, decode and preprocess real images, once.

Sampling is seeded and stratified: :meth:`ImageFolder.split
<edgeeff.data.folder.ImageFolder.split>` groups the images by class sub-folder (a flat folder
is one class), shuffles each class with the seed and sets one image in :data:`HOLDOUT_EVERY` of
every class aside for the quantization report; both sets are then drawn round-robin over the
classes (in the split's seeded order), so a class-folder dataset is represented class by class
instead of by its first class in sort order.

Every calibration run is described by a record (source, counts, files relative to the folder,
content hash, preprocessing, skipped files) that ends up in the model card, so an int8 model
can always be traced to its data. The record never holds an absolute path.
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
from edgeeff.data.folder import ImageFolder
from edgeeff.data.images import load_rgb, resize_crop, unreadable_note

HOLDOUT_EVERY = 5  # one image in five of each class is held back to compare float and int8
DEFAULT_SEED = 0
BUNDLED = "bundled calibration/"
SHA256_OF = ("sha256 of the sha256sum manifest ('<sha256>  <path>' per line) of files, then "
             "holdout_files, in the listed order")


@dataclass
class CalibrationSet:
    images: np.ndarray  # (N, r, r, 3) uint8 used by the converter
    holdout: np.ndarray  # (M, r, r, 3) uint8 used only for the quantisation report
    files: list[str]  # relative to ``folder`` (POSIX), in the order the converter sees them
    holdout_files: list[str]  # relative to ``folder``, in ``holdout`` order
    source: str  # what the record says: the folder's name, or BUNDLED; never absolute
    sha256: str  # see SHA256_OF: exactly the files used, in the listed order
    preprocessor: Preprocessor | None = None
    skipped: list[str] = field(default_factory=list)  # relative to ``folder``
    folder: Path | None = None  # where the files are (not recorded: may be absolute)
    classes: int = 1  # class sub-folders sampled (a flat folder is one)
    seed: int = DEFAULT_SEED

    def record(self, files: bool = True) -> dict:
        """The model card's ``calibration`` entry; ``files=False`` leaves out the file lists
        (the copy embedded in the .tflite stays small; the hash still pins the data)."""
        rec = {
            "source": self.source,
            "count": int(len(self.images)),
            "holdout_count": int(len(self.holdout)),
            "classes": self.classes,
            "sampling": (f"seeded shuffle (seed {self.seed}), round-robin over {self.classes} "
                         f"class folder(s); 1 in {HOLDOUT_EVERY} of each class held back"),
            "seed": self.seed,
            "sha256": self.sha256,
            "sha256_of": SHA256_OF,
            "skipped_unreadable": len(self.skipped),
            "preprocessing": self.preprocessor.to_dict() if self.preprocessor else None,
        }
        if files:
            rec["files"] = list(self.files)
            rec["holdout_files"] = list(self.holdout_files)
        return rec

    def holdout_labels(self, labels: list[str]) -> tuple[list[int] | None, str]:
        """The model's class index of every held-back image, as ``edgeeff eval`` reads labels
        (:meth:`ImageFolder.samples <edgeeff.data.folder.ImageFolder.samples>`: class
        sub-folder names matched to ``labels``, or ImageNet ``<wnid>_`` file names for a
        1000-class model); ``(None, reason)`` when the folder carries no usable labels."""
        if not self.holdout_files or self.folder is None:
            return None, "no held-back images"
        try:
            folder = ImageFolder(self.folder)
            samples = folder.samples(labels)
        except EdgeeffError as e:
            return None, str(e)
        by_rel = {folder.relative(s.path): s.label for s in samples}
        out = [by_rel.get(f) for f in self.holdout_files]
        if any(x is None for x in out):  # pragma: no cover - same listing on both sides
            return None, "held-back files missing from the labelled listing"
        where = ("sub-folder names" if all("/" in f for f in self.holdout_files)
                 else "ImageNet <wnid>_ file names")
        return out, f"from {where}"


def default_dir() -> Path:
    return data_dir("calibration")


def source_name(folder: Path) -> str:
    """How a calibration folder is named in records: never an absolute path."""
    try:
        if folder.resolve() == default_dir().resolve():
            return BUNDLED
    except OSError:  # pragma: no cover
        pass
    return f"{folder.resolve().name}/"


def _round_robin(queues: list[list[Path]], want: int, pp: Preprocessor, skipped: list[Path]):
    """Up to ``want`` decoded crops, one per class in turn; an unreadable file is skipped and
    the same class tries its next file."""
    queues = [list(q) for q in queues]
    imgs, used = [], []
    while len(imgs) < want and any(queues):
        for q in queues:
            if len(imgs) >= want:
                break
            while q:
                p = q.pop(0)
                img = load_rgb(p)
                if img is None:
                    skipped.append(p)
                    continue
                imgs.append(resize_crop(img, pp))
                used.append(p)
                break
    return imgs, used


def _manifest_sha256(folder: Path, paths: list[Path]) -> str:
    """``sha256sum`` lines of ``paths`` (relative names), hashed: what `(cd FOLDER && sha256sum
    FILES...) | sha256sum` prints."""
    digest = hashlib.sha256()
    for p in paths:
        line = f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder).as_posix()}\n"
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def load_calibration(folder: str | Path | None, pp: Preprocessor, num: int = 100,
                     holdout: bool = True, warn_short: int | None = None,
                     seed: int = DEFAULT_SEED) -> CalibrationSet:
    """Up to ``num`` calibration images (plus up to ``num // 4`` held-back ones) from
    ``folder``, sampled as the module docstring says, as ``pp`` crops them (RGB uint8; the
    converter applies the model's normalisation).

    Unreadable files are skipped and counted; fewer usable images than ``warn_short`` (the
    count a user asked for) warns; none at all is an error.
    """
    if num < 1:
        raise EdgeeffError(f"--num-calib must be >= 1, got {num}")
    folder = Path(folder) if folder is not None else default_dir()
    images = ImageFolder(folder, what="calibration folder")
    calib_q, held_q = images.split(1 / HOLDOUT_EVERY if holdout else 0.0, seed)
    skipped: list[Path] = []
    calib, calib_files = _round_robin(calib_q, num, pp, skipped)
    held, held_files = ([], []) if not holdout else _round_robin(
        held_q, max(1, num // (HOLDOUT_EVERY - 1)), pp, skipped)
    if skipped:
        warnings.warn(unreadable_note(len(skipped), folder), stacklevel=2)
    if not calib:
        raise EdgeeffError(f"no usable calibration images under {folder} "
                           f"({len(skipped)} unreadable)")
    if warn_short and len(calib) < warn_short:
        warnings.warn(f"only {len(calib)} usable calibration images under {folder} "
                      f"(--num-calib {warn_short})", stacklevel=2)
    r = pp.resolution
    rel = [p.relative_to(folder).as_posix() for p in calib_files]
    held_rel = [p.relative_to(folder).as_posix() for p in held_files]
    return CalibrationSet(
        images=np.stack(calib),
        holdout=np.stack(held) if held else np.zeros((0, r, r, 3), np.uint8),
        files=rel, holdout_files=held_rel, source=source_name(folder),
        sha256=_manifest_sha256(folder, calib_files + held_files), preprocessor=pp,
        skipped=[p.relative_to(folder).as_posix() for p in skipped], folder=folder,
        classes=len(images.groups), seed=seed,
    )

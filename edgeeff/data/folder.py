"""One reader for a folder of labelled images, and the one seeded stratified split.

Training, calibration and evaluation all read image folders the same way:

* a file's **class** is the folder that holds it, relative to the root (``dress`` for
  ``DIR/dress/1.jpg``; ``.`` for a file directly in ``DIR``): one sub-folder per class;
* a flat ImageNet-style folder is labelled by file name instead, ``<wnid>_<name>.JPEG``;
* :meth:`ImageFolder.split` sets aside a fraction of every class, seeded, so a class-folder
  dataset is represented class by class instead of by its first class in sort order.

Files are listed sorted (by path), so the same folder and seed always give the same sets.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.labels import imagenet_wnids
from edgeeff.data.images import list_images

FLAT = "."  # the class key of files directly in the root


class FolderError(EdgeeffError):
    """A folder that cannot be read as (labelled) images. ``folder`` is the folder given,
    ``problem`` one of :data:`FolderError.PROBLEMS`, ``name`` the sub-folder or file concerned
    (when there is one)."""

    PROBLEMS = ("missing", "empty", "few_classes", "unknown_class", "no_wnid", "unlabelled",
                "bad_name")

    def __init__(self, folder: Path, problem: str, message: str, name: str | None = None):
        self.folder, self.problem, self.name = folder, problem, name
        super().__init__(message)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # index into the labels it was matched to


# unicodedata categories a class name must not hold: control characters (newline, tab, ESC...),
# line and paragraph separators (str.splitlines breaks labels.txt at them too) and the
# surrogates that stand for bytes of a file name that are not UTF-8
_UNPRINTABLE = {"Cc", "Zl", "Zp", "Cs"}


def printable_name(name: str) -> bool:
    """``name`` can be a label: one line of labels.txt, the same bytes in every file."""
    return not any(unicodedata.category(c) in _UNPRINTABLE for c in name)


def _norm(s: str) -> str:
    return s.strip().lower().replace(" ", "_").replace("-", "_")


class ImageFolder:
    """The images under ``root`` (recursively, sorted) grouped by class folder.

    ``what`` names the folder in error messages ("data folder", "calibration folder");
    ``min_classes`` > 0 asks for that many class sub-folders and no image outside them (a
    dataset to train on).
    """

    def __init__(self, root: str | os.PathLike, what: str = "data folder", min_classes: int = 0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FolderError(self.root, "missing", f"{what} not found: {self.root}")
        self.files: list[Path] = list_images(self.root)
        self.groups: dict[str, list[Path]] = {}
        for p in self.files:
            self.groups.setdefault(p.parent.relative_to(self.root).as_posix(), []).append(p)
        for key in sorted(self.groups):
            if not printable_name(key):
                raise FolderError(self.root, "bad_name",
                                  f"{self.root}: class folder {key!r} has a control character, "
                                  "line break or undecodable byte in its name (one class per "
                                  "line of labels.txt): rename it", key)
        if min_classes and len(self.groups) - (FLAT in self.groups) < min_classes:
            raise FolderError(self.root, "few_classes",
                              f"{self.root}: need at least {_count(min_classes)} class "
                              "sub-folders with images")
        if min_classes and FLAT in self.groups:
            raise FolderError(self.root, "unlabelled",
                              f"{self.root}: {len(self.groups[FLAT])} image(s) outside the class "
                              "sub-folders: move them into the sub-folder of their class")
        if not self.files:
            raise FolderError(self.root, "empty", f"no images (jpg/png/bmp/webp) under {self.root}")

    @property
    def class_folders(self) -> list[str]:
        """The class keys (folders relative to the root), sorted; ``.`` stands for the root."""
        return sorted(self.groups)

    @property
    def has_class_folders(self) -> bool:
        """Every image sits in a sub-folder (none directly in the root)."""
        return FLAT not in self.groups

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, POSIX: how records name a file (never absolute)."""
        return path.relative_to(self.root).as_posix()

    def classes(self) -> list[str]:
        """The class sub-folder names, sorted: the labels a model trained on this folder gets
        (sample labels index into them)."""
        return self.class_folders

    def samples(self, labels: list[str] | None = None) -> list[Sample]:
        """Every image with its class index, in file order.

        Without ``labels`` the index is into :meth:`classes`. With a model's ``labels``,
        sub-folder names are matched to them (case, spaces and dashes ignored); a model with
        generic ``class_N`` labels takes the sorted sub-folders in order when their number
        matches; a flat folder needs 1000 labels (ImageNet) and ``<wnid>_`` file names.
        """
        if labels is None:
            index = {c: i for i, c in enumerate(self.classes())}
            return [Sample(p, index[k]) for k, p in self._keyed()]
        if self.has_class_folders:
            return self._by_folder(labels)
        if len(labels) == 1000:
            return self._by_wnid()
        raise FolderError(self.root, "unlabelled",
                          f"cannot tell the labels of {self.root}: use one sub-folder per class")

    def _keyed(self):
        for p in self.files:
            yield p.parent.relative_to(self.root).as_posix(), p

    def _by_folder(self, labels: list[str]) -> list[Sample]:
        by_name = {_norm(lab): i for i, lab in enumerate(labels)}
        names = sorted({p.parent.name for p in self.files})
        generic = all(lab == f"class_{i}" for i, lab in enumerate(labels))
        out = []
        for p in self.files:
            key = _norm(p.parent.name)
            if key in by_name:
                out.append(Sample(p, by_name[key]))
            elif generic and len(names) == len(labels):
                out.append(Sample(p, names.index(p.parent.name)))
            else:
                raise FolderError(self.root, "unknown_class",
                                  f"folder '{p.parent.name}' matches no label of the model",
                                  p.parent.name)
        return out

    def _by_wnid(self) -> list[Sample]:
        wnid = {w: i for i, w in enumerate(imagenet_wnids())}
        out = []
        for p in self.files:
            w = p.name.split("_")[0]
            if w not in wnid:
                raise FolderError(self.root, "no_wnid",
                                  f"{p.name}: no <wnid>_ prefix and no class sub-folder", p.name)
            out.append(Sample(p, wnid[w]))
        return out

    def split(self, fraction: float, seed: int = 0) -> tuple[list[list[Path]], list[list[Path]]]:
        """The seeded stratified split: per class, ``(kept, held out)`` file lists.

        Classes come in a seeded order and each class's files are shuffled with the same
        generator; ``int(m * fraction)`` of a class of ``m`` files are held out, at least one
        when the class has two or more (``fraction`` 0 holds out nothing). The same folder,
        fraction and seed always give the same lists.
        """
        if not 0 <= fraction < 1:
            raise EdgeeffError(f"the held-out fraction must be in [0, 1), got {fraction:g}")
        rng = np.random.default_rng(seed)
        keys = self.class_folders
        kept, held = [], []
        for key in [keys[i] for i in rng.permutation(len(keys))]:
            files = [self.groups[key][i] for i in rng.permutation(len(self.groups[key]))]
            m = len(files)
            n = 0 if fraction == 0 or m < 2 else max(1, int(m * fraction + 1e-9))
            held.append(files[:n])
            kept.append(files[n:])
        return kept, held


def _count(n: int) -> str:
    return {1: "one", 2: "two", 3: "three"}.get(n, str(n))

"""``edgeeff data check``: what would go wrong training on a folder of photos, found before
training on it.

Every image is read once and decoded once, through the project's one loader
(:func:`edgeeff.data.images.load_bgr`, so its limits apply here too), on a thread per core
(OpenCV and hashlib release the GIL). From each file it keeps only a few numbers:

* a **content hash** (BLAKE2b of the bytes): equal hashes are *exact duplicates*;
* a 64-bit **perceptual hash** (pHash: the image area-averaged to 32x32 grey levels, its 2-D
  DCT, and one bit per coefficient of the 8x8 lowest frequencies, set where it is above their
  median). Two different files whose pHashes differ in at most :data:`NEAR_DISTANCE` of the 64
  bits are *near duplicates*: the same photo resized, re-encoded or lightly edited. pHash
  rather than the cheaper difference hash (dHash) because it separates those from merely
  similar photos far better on product-style photos of one object on a plain background;
  the threshold and the comparison are in docs/usage.md;
* its size (*tiny*: shorter side under :data:`TINY_SIDE` pixels, far below any model's
  input, so training upsamples it into blur), and whether it is *grayscale* (every cell of the
  32x32 colour thumbnail has its three channels within :data:`GRAY_SPREAD` levels: grey files
  and grey photos stored as colour alike);
* whether the file ends early (*truncated*: a JPEG with no end-of-image marker after its last
  scan, a PNG with no ``IEND`` chunk, a WebP shorter than its RIFF header says); one that
  does not decode at all is also *unreadable* (training skips it).

Duplicates are grouped (files joined by exact or near pairs); a group with files in both the
training and the validation folder is **leakage**: the validation photo was seen in training,
and every accuracy measured on that folder is inflated by it. A group whose files carry
different class folders is a labelling conflict.

A folder **cannot be trained on** (exit code 2; :attr:`DataCheck.problems`) when it has no
images, images outside the class sub-folders, fewer than two classes with a readable image, a
class folder with no readable image, or (``--val``) validation classes that training lacks.
Everything else is a warning: the command exits 0.

:class:`DataCheck` is the one typed record of a check (``--json`` is its :meth:`to_dict`);
:func:`leakage` is the part ``train`` and ``tune`` run before they start.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.optional import require
from edgeeff.data.folder import FLAT, FolderError, ImageFolder
from edgeeff.data.images import load_bgr

NEAR_DISTANCE = 2  # pHash bits (of 64) at or below which two different files are near duplicates
HASH_BITS = 64
TINY_SIDE = 64  # pixels: a shorter side below this is a tiny image
GRAY_SPREAD = 4  # grey levels: channels within this in every thumbnail cell is grayscale
IMBALANCE_WARN = 5.0  # largest class over smallest class at or above which a warning is given
SPLITS = ("train", "val")


# --------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class Item:
    """One file of a report: ``split`` is ``train`` or ``val``, ``path`` relative to its
    folder (POSIX); its class is the folder that holds it."""

    split: str
    path: str

    @property
    def cls(self) -> str:
        parent = self.path.rsplit("/", 1)[0] if "/" in self.path else FLAT
        return parent

    def to_dict(self) -> dict:
        return {"split": self.split, "path": self.path}

    def __str__(self) -> str:
        return f"{self.split}:{self.path}"


@dataclass(frozen=True)
class DuplicateGroup:
    """Files that are the same photo: ``kind`` ``exact`` (identical bytes) or ``near`` (pHash
    within ``distance`` bits of another member; ``distance`` is the largest such link)."""

    kind: str
    files: tuple[Item, ...]
    distance: int = 0

    @property
    def cross_split(self) -> bool:
        """Files in both the training and the validation folder: leakage."""
        return len({f.split for f in self.files}) > 1

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted({f.cls for f in self.files}))

    @property
    def conflicting(self) -> bool:
        """The same photo under different class folders."""
        return len(self.classes) > 1

    def to_dict(self) -> dict:
        return {"kind": self.kind, "distance": self.distance, "cross_split": self.cross_split,
                "conflicting_classes": self.conflicting,
                "files": [f.to_dict() for f in self.files]}


@dataclass(frozen=True)
class Tiny:
    path: str
    width: int
    height: int

    def to_dict(self) -> dict:
        return {"path": self.path, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Unreadable:
    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class FolderCheck:
    """What one folder holds. ``class_counts``: readable images per class folder (every class
    folder, empty ones with 0), sorted by class; ``outside``: images directly in the root."""

    split: str
    root: str
    images: int
    class_counts: tuple[tuple[str, int], ...]
    outside: tuple[str, ...] = ()
    unreadable: tuple[Unreadable, ...] = ()
    truncated: tuple[str, ...] = ()
    tiny: tuple[Tiny, ...] = ()
    grayscale: tuple[str, ...] = ()

    @property
    def readable(self) -> int:
        return self.images - len(self.unreadable)

    @property
    def empty_classes(self) -> tuple[str, ...]:
        return tuple(c for c, n in self.class_counts if n == 0)

    @property
    def imbalance(self) -> float | None:
        """The largest class count over the smallest non-empty one (None under two classes)."""
        counts = [n for _, n in self.class_counts if n > 0]
        return max(counts) / min(counts) if len(counts) >= 2 else None

    def extremes(self) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """(largest class, smallest non-empty class), each as (name, count)."""
        rows = [r for r in self.class_counts if r[1] > 0]
        if len(rows) < 2:
            return None
        return max(rows, key=lambda r: (r[1], r[0])), min(rows, key=lambda r: (r[1], r[0]))

    def to_dict(self) -> dict:
        imb = self.imbalance
        return {"split": self.split, "root": self.root, "images": self.images,
                "readable": self.readable, "classes": dict(self.class_counts),
                "empty_classes": list(self.empty_classes),
                "imbalance": None if imb is None else round(imb, 3),
                "outside_class_folders": list(self.outside),
                "unreadable": [u.to_dict() for u in self.unreadable],
                "truncated": list(self.truncated),
                "tiny": [t.to_dict() for t in self.tiny],
                "grayscale": list(self.grayscale)}


@dataclass(frozen=True)
class DataCheck:
    """The result of ``edgeeff data check``: the folders, the duplicate groups (exact, then
    near), the thresholds used, and the problems (the folder cannot be trained on: exit 2)
    and warnings (exit 0)."""

    folders: tuple[FolderCheck, ...]
    exact: tuple[DuplicateGroup, ...]
    near: tuple[DuplicateGroup, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    near_distance: int = NEAR_DISTANCE
    tiny_side: int = TINY_SIDE
    gray_spread: int = GRAY_SPREAD
    imbalance_warn: float = IMBALANCE_WARN
    hash: str = field(default=f"pHash {HASH_BITS}-bit (DCT of 32x32 grey, 8x8 lowest)")

    @property
    def exit_code(self) -> int:
        return 2 if self.problems else 0

    def folder(self, split: str) -> FolderCheck | None:
        return next((f for f in self.folders if f.split == split), None)

    def groups(self, split: str | None = None, cross: bool | None = None
               ) -> list[DuplicateGroup]:
        """Exact and near groups, optionally only those inside ``split`` or only cross-split."""
        out = []
        for g in self.exact + self.near:
            if cross is not None and g.cross_split != cross:
                continue
            if split is not None and (g.cross_split or g.files[0].split != split):
                continue
            out.append(g)
        return out

    def to_dict(self) -> dict:
        return {"ok": not self.problems, "exit_code": self.exit_code,
                "thresholds": {"near_duplicate_max_distance": self.near_distance,
                               "hash": self.hash, "tiny_shorter_side_px": self.tiny_side,
                               "grayscale_max_channel_spread": self.gray_spread,
                               "imbalance_warning_ratio": self.imbalance_warn},
                "folders": [f.to_dict() for f in self.folders],
                "exact_duplicates": [g.to_dict() for g in self.exact],
                "near_duplicates": [g.to_dict() for g in self.near],
                "cross_split": {"exact": sum(g.cross_split for g in self.exact),
                                "near": sum(g.cross_split for g in self.near)},
                "problems": list(self.problems), "warnings": list(self.warnings)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


@dataclass(frozen=True)
class Leakage:
    """The leakage part alone (``train`` and ``tune`` before they start): with a validation
    folder, the duplicate groups that span both folders; without one, the groups inside the
    training folder (its held-out split can put one copy on each side)."""

    train: str
    val: str | None
    groups: tuple[DuplicateGroup, ...]
    near_distance: int = NEAR_DISTANCE

    def line(self) -> str:
        """One line for the log."""
        how = f"identical bytes or pHash distance <= {self.near_distance}"
        exact = sum(g.kind == "exact" for g in self.groups)
        near = len(self.groups) - exact
        if self.val is not None:
            if not self.groups:
                return (f"data check: no photo of {self.val} is also in {self.train} ({how})")
            n = sum(1 for g in self.groups for f in g.files if f.split == "val")
            ex = self.groups[0]
            return (f"data check: warning: {n} photo(s) of {self.val} are also in {self.train} "
                    f"({exact} exact, {near} near group(s); {how}; e.g. "
                    f"{' = '.join(map(str, ex.files[:2]))}): validation accuracy is inflated "
                    f"by them; see 'edgeeff data check {self.train} --val {self.val}'")
        if not self.groups:
            return f"data check: no duplicate photos in {self.train} ({how})"
        ex = self.groups[0]
        return (f"data check: warning: {len(self.groups)} group(s) of duplicate photos in "
                f"{self.train} ({exact} exact, {near} near; {how}; e.g. "
                f"{' = '.join(str(f.path) for f in ex.files[:2])}): the held-out split can put "
                f"copies on both sides; see 'edgeeff data check {self.train}'")


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Scan:
    """What the check keeps of one file."""

    item: Item
    digest: bytes = b""
    phash: int | None = None  # None: unreadable
    width: int = 0
    height: int = 0
    gray: bool = False
    truncated: bool = False
    error: str | None = None


def _cv2():
    return require("cv2", "checking images")


def ends_early(data: bytes, suffix: str) -> bool:
    """True when an image file's bytes stop before its format's end (a copy cut short)."""
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg") or data[:2] == b"\xff\xd8":
        sos = data.rfind(b"\xff\xda")  # the last scan; entropy-coded data never holds 0xFF 0xD9
        return sos < 0 or data.find(b"\xff\xd9", sos) < 0
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data.rfind(b"IEND") < 0
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return len(data) < 8 + int.from_bytes(data[4:8], "little")
    return False


def phash(img_bgr: np.ndarray) -> tuple[int, bool]:
    """(64-bit pHash, grayscale?) of a BGR image (see the module docstring)."""
    cv2 = _cv2()
    thumb = cv2.resize(img_bgr, (32, 32), interpolation=cv2.INTER_AREA)
    spread = int((thumb.max(axis=2).astype(np.int16) - thumb.min(axis=2)).max())
    grey = cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY).astype(np.float32)
    low = cv2.dct(grey)[:8, :8].ravel()
    bits = low > np.median(low)
    return int.from_bytes(np.packbits(bits).tobytes(), "big"), spread <= GRAY_SPREAD


def _scan_one(path: Path, item: Item) -> _Scan:
    try:
        data = path.read_bytes()
    except OSError as e:
        return _Scan(item, error=f"cannot read: {e.strerror or e}")
    digest = hashlib.blake2b(data, digest_size=16).digest()
    truncated = ends_early(data, path.suffix)
    del data
    try:
        img = load_bgr(path)
    except EdgeeffError as e:  # the loader's own limits (a decompression bomb, ...)
        return _Scan(item, digest, truncated=truncated, error=str(e))
    if img is None or img.size == 0:
        why = "truncated: does not decode" if truncated else "does not decode as an image"
        return _Scan(item, digest, truncated=truncated, error=why)
    h, w = img.shape[:2]
    bits, gray = phash(img)
    return _Scan(item, digest, bits, w, h, gray, truncated)


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _scan(folders: list[tuple[str, ImageFolder]], progress=None) -> list[_Scan]:
    jobs = [(p, Item(split, f.relative(p))) for split, f in folders for p in f.files]
    out = []
    with ThreadPoolExecutor(_workers()) as ex:
        for s in ex.map(lambda j: _scan_one(*j), jobs):
            out.append(s)
            if progress:
                progress(1)
    return out


def _open(root, split: str) -> ImageFolder | None:
    """The folder, or None for one with no images (a missing one raises FolderError)."""
    what = "validation folder" if split == "val" else "data folder"
    try:
        return ImageFolder(root, what=what)
    except FolderError as e:
        if e.problem == "empty":
            return None
        raise


# --------------------------------------------------------------------------- duplicates


def _distances(bits: np.ndarray, block: int = 2048):
    """Yield (i, j, distance) of every pair i < j of rows of ``bits`` (N x 64 of 0/1) within
    NEAR_DISTANCE: Hamming distance from one matrix product of the rows as +-1 vectors,
    a block of rows at a time."""
    pm = bits.astype(np.float32) * 2 - 1
    for a in range(0, len(pm), block):
        d = (HASH_BITS - pm[a:a + block] @ pm.T) / 2
        ii, jj = np.nonzero(d <= NEAR_DISTANCE + 0.5)
        for i, j in zip(ii + a, jj):
            if i < j:
                yield int(i), int(j), int(round(d[i - a, j]))


class _Union:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def duplicates(scans: list[_Scan]) -> tuple[list[DuplicateGroup], list[DuplicateGroup]]:
    """(exact groups, near groups). A near group joins different contents whose pHashes are
    within NEAR_DISTANCE, each content standing for all of its exact copies."""
    by_digest: dict[bytes, list[int]] = {}
    for i, s in enumerate(scans):
        if s.digest:
            by_digest.setdefault(s.digest, []).append(i)
    exact = [DuplicateGroup("exact", tuple(scans[i].item for i in ix))
             for ix in by_digest.values() if len(ix) > 1]
    reps = [ix for ix in by_digest.values() if scans[ix[0]].phash is not None]
    if len(reps) < 2:
        return _sorted(exact), []
    packed = b"".join(scans[ix[0]].phash.to_bytes(8, "big") for ix in reps)
    bits = np.unpackbits(np.frombuffer(packed, np.uint8).reshape(len(reps), 8), axis=1)
    u, worst = _Union(len(reps)), {}
    for i, j, d in _distances(bits):
        u.join(i, j)
        worst[(i, j)] = d
    members: dict[int, list[int]] = {}
    for k in range(len(reps)):
        members.setdefault(u.find(k), []).append(k)
    link = {}
    for (i, _), d in worst.items():
        r = u.find(i)
        link[r] = max(link.get(r, 0), d)
    near = [DuplicateGroup("near", tuple(scans[i].item for k in ks for i in reps[k]), link[r])
            for r, ks in members.items() if len(ks) > 1]
    return _sorted(exact), _sorted(near)


def _sorted(groups: list[DuplicateGroup]) -> list[DuplicateGroup]:
    """Cross-split groups first, then by first file: the same folders always list the same."""
    return sorted((DuplicateGroup(g.kind, tuple(sorted(g.files, key=lambda f: (f.split != "train",
                                                                                f.path))),
                                  g.distance) for g in groups),
                  key=lambda g: (not g.cross_split, str(g.files[0])))


# --------------------------------------------------------------------------- the check


def _class_folders(root: Path) -> list[str]:
    """The direct sub-folders of ``root`` (not hidden): the classes the user meant."""
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _folder(split: str, root: Path, folder: ImageFolder | None,
            scans: list[_Scan]) -> FolderCheck:
    mine = [s for s in scans if s.item.split == split]
    counts: dict[str, int] = {c: 0 for c in _class_folders(root)}
    if folder is not None:
        for key in folder.class_folders:
            if key != FLAT:
                counts.setdefault(key, 0)
    outside = []
    for s in mine:
        key = s.item.cls
        if key == FLAT:
            outside.append(s.item.path)
        elif s.phash is not None:
            counts[key] = counts.get(key, 0) + 1
    # a class folder holding only nested class folders is not a class of its own
    nested = {k.split("/", 1)[0] for k in counts if "/" in k}
    for k in nested:
        if counts.get(k) == 0:
            del counts[k]
    return FolderCheck(
        split=split, root=str(root), images=len(mine),
        class_counts=tuple(sorted(counts.items())), outside=tuple(outside),
        unreadable=tuple(Unreadable(s.item.path, s.error) for s in mine if s.error),
        truncated=tuple(s.item.path for s in mine if s.truncated),
        tiny=tuple(Tiny(s.item.path, s.width, s.height) for s in mine
                   if s.phash is not None and min(s.width, s.height) < TINY_SIDE),
        grayscale=tuple(s.item.path for s in mine if s.phash is not None and s.gray))


def _verdict(folders: list[FolderCheck], exact, near) -> tuple[list[str], list[str]]:
    problems, warnings = [], []
    train = folders[0]
    for f in folders:
        name = "validation folder" if f.split == "val" else "training folder"
        if f.images == 0:
            problems.append(f"{name} {f.root}: no images (jpg/png/bmp/webp)")
            continue
        if f.outside:
            problems.append(f"{name} {f.root}: {len(f.outside)} image(s) outside the class "
                            f"sub-folders (e.g. {f.outside[0]}): move them into their class's")
        if f.split == "train":
            live = [c for c, n in f.class_counts if n > 0]
            if len(live) < 2:
                problems.append(f"{name} {f.root}: {len(live)} class(es) with a readable image; "
                                "training needs at least two class sub-folders")
        for c in f.empty_classes:
            msg = f"{name} {f.root}: class '{c}' has no readable image"
            (problems if f.split == "train" else warnings).append(msg)
        if f.split == "val":
            extra = sorted({c for c, n in f.class_counts if n}
                           - {c for c, n in train.class_counts if n})
            if extra:
                problems.append(f"{name} {f.root}: class(es) {', '.join(extra[:5])} have no "
                                "readable image in the training folder")
        if f.unreadable:
            warnings.append(f"{name}: {len(f.unreadable)} unreadable file(s), skipped by "
                            f"training (e.g. {f.unreadable[0].path}: {f.unreadable[0].reason})")
        truncated_ok = [p for p in f.truncated if p not in {u.path for u in f.unreadable}]
        if truncated_ok:
            warnings.append(f"{name}: {len(truncated_ok)} truncated file(s) that decode only in "
                            f"part (e.g. {truncated_ok[0]})")
        imb = f.imbalance
        if imb is not None and imb >= IMBALANCE_WARN:
            (big, nb), (small, ns) = f.extremes()
            warnings.append(f"{name}: classes imbalanced {imb:.1f}:1 ({big} {nb}, {small} {ns})")
        if f.tiny:
            warnings.append(f"{name}: {len(f.tiny)} tiny image(s) (shorter side < {TINY_SIDE} "
                            f"px, e.g. {f.tiny[0].path} {f.tiny[0].width}x{f.tiny[0].height})")
        if f.grayscale:
            warnings.append(f"{name}: {len(f.grayscale)} grayscale image(s) "
                            f"(e.g. {f.grayscale[0]})")
    for kind, groups in (("exact", exact), ("near", near)):
        for split in SPLITS:
            inside = [g for g in groups if not g.cross_split and g.files[0].split == split]
            if inside:
                what = ("identical files" if kind == "exact"
                        else f"near-duplicate photos (pHash distance <= {NEAR_DISTANCE})")
                warnings.append(f"{'validation' if split == 'val' else 'training'} folder: "
                                f"{len(inside)} group(s) of {what}, e.g. "
                                + " = ".join(f.path for f in inside[0].files[:2]))
        cross = [g for g in groups if g.cross_split]
        if cross:
            n = sum(1 for g in cross for f in g.files if f.split == "val")
            rel = ("identical to" if kind == "exact"
                   else f"near duplicates (pHash distance <= {NEAR_DISTANCE}) of")
            warnings.append(f"leakage: {n} validation photo(s) {rel} training photos, e.g. "
                            + " = ".join(map(str, cross[0].files[:2])))
    conflicts = [g for g in exact + near if g.conflicting]
    if conflicts:
        warnings.append(f"{len(conflicts)} duplicate group(s) span different classes (the same "
                        f"photo, two labels), e.g. {' = '.join(map(str, conflicts[0].files[:2]))}")
    return problems, warnings


def open_folders(data: str | os.PathLike, val: str | os.PathLike | None = None
                 ) -> list[tuple[str, Path, ImageFolder | None]]:
    """(split, root, folder) for ``data`` and ``val``: the files listed, nothing decoded; a
    folder that does not exist raises :class:`~edgeeff.data.folder.FolderError`, one with no
    images gives None."""
    roots = [("train", Path(data))] + ([("val", Path(val))] if val is not None else [])
    return [(split, root, _open(root, split)) for split, root in roots]


def check(data: str | os.PathLike, val: str | os.PathLike | None = None,
          progress=None, total=None, opened=None) -> DataCheck:
    """Check ``data`` (and ``val``): see the module docstring. ``total(n)`` is told the number
    of files before scanning starts, ``progress(1)`` once per file scanned; ``opened``: what
    :func:`open_folders` gave for the same folders. A folder that does not exist raises
    :class:`~edgeeff.data.folder.FolderError`; everything else is reported."""
    opened = open_folders(data, val) if opened is None else opened
    present = [(split, f) for split, _, f in opened if f is not None]
    if total:
        total(sum(len(f.files) for _, f in present))
    scans = _scan(present, progress)
    exact, near = duplicates(scans)
    folders = [_folder(split, root, f, scans) for split, root, f in opened]
    problems, warnings = _verdict(folders, exact, near)
    return DataCheck(tuple(folders), tuple(exact), tuple(near), tuple(problems), tuple(warnings))


def leakage(data: str | os.PathLike, val: str | os.PathLike | None = None) -> Leakage:
    """The duplicates that leak into validation (see :class:`Leakage`), for ``train``/``tune``."""
    present = [(split, f) for split, _, f in open_folders(data, val) if f is not None]
    exact, near = duplicates(_scan(present))
    groups = [g for g in exact + near if (g.cross_split if val is not None else True)]
    return Leakage(str(data), None if val is None else str(val), tuple(groups))

"""The folder ``edgeeff collect`` fills: one sub-folder per class, photos written atomically.

Nothing a browser sends reaches the file system unchecked:

- a **class name** passes :func:`check_class_name` (no path separators, no ``..``, not
  hidden, no control or invisible characters, none of ``<>:"|?*``, no surrounding spaces, at
  most :data:`MAX_NAME_CHARS` characters) and its folder must then resolve to a direct child of
  the root (a class folder that is a link elsewhere is refused);
- a **photo** is named here, ``<class>/<UTC time>-<n>.jpg``; it is written to a hidden
  temporary file in the class folder and published under its name with a hard link, which
  fails rather than replace a file already there (another collect on the same folder, a
  clock set back): ``n`` then moves on;
- **undo** takes an id this :class:`Store` handed out for a file it wrote or moved in this
  session, never a path; other files are out of its reach;
- a **kept frame** (``demo --keep-unsure``: ``unsure-*.jpg`` with its guess in ``.json``,
  directly in the root) is named by its stem, which must match :data:`UNSURE_STEM` and name a
  regular file there.

The classes and counts are read from the disk every time, so a second ``collect`` of the same
folder starts where the first left off. Removing a class removes only an empty folder: photos
are data only the user deletes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path

from edgeeff.core import artifacts as A
from edgeeff.core.errors import EdgeeffError
from edgeeff.data.images import IMAGE_SUFFIXES

MAX_NAME_CHARS = 64
MAX_NAME_BYTES = 200  # UTF-8: file systems allow 255 bytes per name
MAX_CLASSES = 100
RECENT = 12  # session photos shown with a thumbnail and an undo button
MAX_UNSURE_LISTED = 200  # kept frames listed at once (oldest first)
MAX_GUESS_BYTES = 64 * 1024  # a kept frame's .json, at most
UNSURE_PREFIX = "unsure-"
UNSURE_STEM = re.compile(r"unsure-[A-Za-z0-9-]{1,96}")
_FORBIDDEN = set('/\\<>:"|?*')
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class CollectError(EdgeeffError):
    """A request ``collect`` refuses; ``status`` is its HTTP status, ``reason`` the message."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, reason: str, status: HTTPStatus | None = None):
        self.reason = reason
        if status is not None:
            self.status = status
        super().__init__(reason)


class BadClassName(CollectError):
    """``name`` cannot be a class folder: ``reason`` says why (400)."""

    def __init__(self, name, reason: str):
        self.name = name
        super().__init__(f"bad class name {str(name)[:80]!r}: {reason}", HTTPStatus.BAD_REQUEST)


def check_class_name(name) -> str:
    """``name`` as a class folder name (NFC), or :class:`BadClassName`."""
    if not isinstance(name, str):
        raise BadClassName(name, "expected a string")
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise BadClassName(name, "empty")
    if len(name) > MAX_NAME_CHARS or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadClassName(name, f"longer than {MAX_NAME_CHARS} characters")
    if name != name.strip():
        raise BadClassName(name, "starts or ends with a space")
    if name.startswith("."):
        raise BadClassName(name, "starts with a dot (hidden, or . and ..)")
    if ".." in name:
        raise BadClassName(name, "contains ..")
    bad = sorted(_FORBIDDEN & set(name))
    if bad:
        raise BadClassName(name, f"contains {''.join(bad)!r} (path separators and "
                                 "characters file systems refuse)")
    if any(unicodedata.category(c) in _INVISIBLE for c in name):
        raise BadClassName(name, "contains a control or invisible character")
    return name


@dataclass(frozen=True)
class Shot:
    """One file this session wrote (a capture) or moved (a labelled kept frame)."""

    id: str  # what the browser names it by
    cls: str
    name: str  # the file name in the class folder
    time: float
    kind: str = "capture"  # or "label"
    origin: str | None = None  # a labelled frame's stem (undo moves it back)
    guess: bytes | None = None  # its .json, rewritten on undo
    thumb: bytes | None = None  # a small JPEG, for the page


@dataclass(frozen=True)
class KeptFrame:
    """A frame ``demo --keep-unsure`` kept, waiting for a label."""

    stem: str
    guess: tuple[tuple[str, float], ...]  # the model's top-k (label, score)


class Store:
    """The dataset folder ``root``; every method is safe to call from several threads."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise EdgeeffError(f"{root} exists and is not a folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EdgeeffError(f"cannot create {root}: {e.strerror or e}") from None
        self.root = root.resolve()
        self.lock = threading.RLock()
        self.shots: dict[str, Shot] = {}
        self.recent: deque[str] = deque(maxlen=RECENT)
        self.n = 0  # photos named this session (the <n> of <time>-<n>.jpg)
        self.mode = 0o666 & ~_umask()  # read once: umask is process-wide, threads run

    # ------------------------------------------------------------------ classes

    def class_dir(self, name, must_exist: bool = True) -> Path:
        """The folder of class ``name``: checked, and a direct child of the root."""
        name = check_class_name(name)
        p = self.root / name
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise BadClassName(name, "exists and is not a plain folder")
        if p.resolve().parent != self.root:
            raise BadClassName(name, "does not resolve inside the folder")
        if must_exist and not p.is_dir():
            raise CollectError(f"no class {name!r}", HTTPStatus.NOT_FOUND)
        return p

    def classes(self) -> list[tuple[str, int]]:
        """(name, photos) of every class folder, sorted by name."""
        out = []
        with self.lock:
            for p in sorted(self.root.iterdir()):
                if not p.is_dir() or p.is_symlink():
                    continue
                try:
                    check_class_name(p.name)
                except BadClassName:
                    continue  # hidden folders and the like are not classes
                out.append((p.name, _count(p)))
        return out

    def _same_name(self, name: str) -> str | None:
        """A class whose name equals ``name`` but for case (one folder on macOS or FAT)."""
        low = name.casefold()
        return next((c for c, _ in self.classes() if c.casefold() == low), None)

    def add_class(self, name) -> str:
        with self.lock:
            p = self.class_dir(name, must_exist=False)
            if self._same_name(p.name) is not None:
                raise CollectError(f"class {p.name!r} exists", HTTPStatus.CONFLICT)
            if len(self.classes()) >= MAX_CLASSES:
                raise CollectError(f"at most {MAX_CLASSES} classes", HTTPStatus.CONFLICT)
            try:
                p.mkdir()
            except OSError as e:
                raise CollectError(f"cannot create class {p.name!r}: {e.strerror or e}",
                                   HTTPStatus.INTERNAL_SERVER_ERROR) from None
            return p.name

    def rename_class(self, old, new) -> str:
        with self.lock:
            src = self.class_dir(old)
            dst = self.class_dir(new, must_exist=False)
            clash = self._same_name(dst.name)
            if clash is not None and clash != src.name:
                raise CollectError(f"class {dst.name!r} exists", HTTPStatus.CONFLICT)
            try:
                src.rename(dst)
            except OSError as e:
                raise CollectError(f"cannot rename {src.name!r}: {e.strerror or e}",
                                   HTTPStatus.INTERNAL_SERVER_ERROR) from None
            for k, s in self.shots.items():
                if s.cls == src.name:
                    self.shots[k] = replace(s, cls=dst.name)
            return dst.name

    def remove_class(self, name) -> None:
        """Remove an empty class folder; one with files in it is refused (409)."""
        with self.lock:
            p = self.class_dir(name)
            left = sum(1 for _ in p.iterdir())
            if left:
                raise CollectError(f"class {p.name!r} holds {left} file(s): undo or move "
                                   "them first", HTTPStatus.CONFLICT)
            p.rmdir()

    # ------------------------------------------------------------------ photos

    def save(self, cls, jpeg: bytes, thumb: bytes | None = None, when: float | None = None
             ) -> Shot:
        """Write ``jpeg`` as a new photo of class ``cls``; never replaces a file."""
        when = time.time() if when is None else when
        with self.lock:
            folder = self.class_dir(cls)
            fd, tmp = tempfile.mkstemp(prefix=".collect-", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(jpeg)
                    f.flush()
                os.chmod(tmp, self.mode)
                stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
                name = self._publish(Path(tmp), folder,
                                     lambda: f"{stamp}-{self._next():04d}.jpg")
            except OSError as e:
                raise CollectError(f"cannot write a photo of {folder.name!r}: "
                                   f"{e.strerror or e}", HTTPStatus.INSUFFICIENT_STORAGE
                                   ) from None
            finally:
                Path(tmp).unlink(missing_ok=True)
            return self._record(Shot(secrets.token_urlsafe(9), folder.name, name, when,
                                     thumb=thumb))

    def _next(self) -> int:
        self.n += 1
        return self.n

    @staticmethod
    def _publish(src: Path, folder: Path, names) -> str:
        """Give ``src`` the first free name ``names()`` yields in ``folder`` (a hard link:
        it fails on an existing name instead of replacing the file); ``src`` stays."""
        for _ in range(10_000):
            name = names()
            try:
                os.link(src, folder / name)
                return name
            except FileExistsError:
                continue
            except OSError:  # no hard links here (FAT): checked, then renamed under our lock
                if (folder / name).exists():
                    continue
                with open(src, "rb") as f:
                    data = f.read()
                fd, tmp = tempfile.mkstemp(prefix=".collect-", suffix=".tmp", dir=folder)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, folder / name)
                return name
        raise OSError("no free file name")

    def _record(self, shot: Shot) -> Shot:
        self.shots[shot.id] = shot
        if len(self.recent) == self.recent.maxlen:  # its thumbnail is no longer shown
            old = self.shots.get(self.recent[0])
            if old is not None:
                self.shots[old.id] = replace(old, thumb=None)
        self.recent.append(shot.id)
        return shot

    def path_of(self, shot_id) -> Path:
        """The file of a shot of this session (404 for any other id)."""
        with self.lock:
            shot = self.shots.get(shot_id) if isinstance(shot_id, str) else None
            if shot is None:
                raise CollectError("no such photo in this session", HTTPStatus.NOT_FOUND)
            return self.class_dir(shot.cls) / shot.name

    def undo(self, shot_id) -> Shot:
        """Delete a photo this session took, or move a labelled frame back to be labelled."""
        with self.lock:
            path = self.path_of(shot_id)
            shot = self.shots.pop(shot_id)
            try:
                self.recent.remove(shot_id)
            except ValueError:
                pass
            if shot.kind == "label":
                back = self.root / f"{shot.origin}.jpg"
                if back.exists():
                    raise CollectError(f"{back.name} exists", HTTPStatus.CONFLICT)
                _write_atomic(self.root / (shot.origin + A.JSON_SUFFIX), shot.guess or b"{}\n")
                os.replace(path, back)
            else:
                path.unlink(missing_ok=True)
            return shot

    def recent_shots(self) -> list[Shot]:
        with self.lock:
            return [self.shots[i] for i in reversed(self.recent) if i in self.shots]

    # ------------------------------------------------------------------ kept frames

    def kept_frame(self, stem) -> Path:
        """The JPEG of kept frame ``stem`` (checked; 404 when it is not one)."""
        if not isinstance(stem, str) or not UNSURE_STEM.fullmatch(stem):
            raise CollectError("expected a kept frame's name (unsure-...)")
        p = self.root / f"{stem}.jpg"
        if p.is_symlink() or not p.is_file():
            raise CollectError(f"no kept frame {stem}", HTTPStatus.NOT_FOUND)
        return p

    def kept(self) -> tuple[int, list[KeptFrame]]:
        """(how many, the oldest :data:`MAX_UNSURE_LISTED` with their guesses)."""
        with self.lock:
            files = sorted(p for p in self.root.glob(f"{UNSURE_PREFIX}*.jpg")
                           if UNSURE_STEM.fullmatch(p.stem) and p.is_file()
                           and not p.is_symlink())
        return len(files), [KeptFrame(p.stem, _guess(p.with_suffix(A.JSON_SUFFIX)))
                            for p in files[:MAX_UNSURE_LISTED]]

    def label(self, stem, cls) -> Shot:
        """Move kept frame ``stem`` into class ``cls`` (its .json goes; undo restores it)."""
        with self.lock:
            src = self.kept_frame(stem)
            folder = self.class_dir(cls)
            meta = src.with_suffix(A.JSON_SUFFIX)
            guess = _read_bounded(meta)
            base = src.stem[len(UNSURE_PREFIX):]
            k = iter(range(1, 10_000))
            try:
                name = self._publish(src, folder, lambda: f"{base}.jpg" if (i := next(k)) == 1
                                     else f"{base}-{i}.jpg")
                src.unlink()
                meta.unlink(missing_ok=True)
            except OSError as e:
                raise CollectError(f"cannot move {src.name}: {e.strerror or e}",
                                   HTTPStatus.INTERNAL_SERVER_ERROR) from None
            return self._record(Shot(secrets.token_urlsafe(9), folder.name, name, time.time(),
                                     kind="label", origin=src.stem, guess=guess))


def _count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
               and not p.name.startswith(".") and p.is_file())


def _read_bounded(p: Path) -> bytes | None:
    try:
        with open(p, "rb") as f:
            return f.read(MAX_GUESS_BYTES)
    except OSError:
        return None


def _guess(p: Path) -> tuple[tuple[str, float], ...]:
    """The top-k of a kept frame's .json, or () when it is missing or unreadable."""
    try:
        top = json.loads(_read_bounded(p) or b"{}").get("top", [])
        return tuple((str(t["label"])[:100], float(t["score"])) for t in top[:5])
    except (ValueError, TypeError, KeyError, AttributeError):
        return ()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".collect-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

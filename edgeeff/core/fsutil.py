"""Atomic writes: an artifact is either complete or absent, never half-written.

A write that fails (a full disk, a read-only file system) becomes one :class:`WriteFailed`
error naming the path and the reason; the temporary file or folder is removed and whatever was
at the destination before is left as it was. The final renames of :func:`atomic_dir` run with
SIGINT and SIGTERM held back, so an interrupt cannot fall between "old output moved away" and
"new output in place".
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from edgeeff.core.errors import EdgeeffError, FieldError

# errors that mean "the destination cannot take this write", not a bug elsewhere
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class WriteFailed(EdgeeffError):
    """Writing ``path`` failed with ``errno`` (``strerror``); ``kept`` is True when a previous
    version of ``path`` is still there, untouched."""

    def __init__(self, path: str | os.PathLike, err: OSError, kept: bool = False):
        self.path, self.errno = Path(path), err.errno
        self.strerror = err.strerror or str(err)
        self.kept = kept
        tail = f"; the previous {self.path} is left as it was" if kept else "; nothing written"
        super().__init__(f"cannot write {self.path}: {self.strerror}{tail}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteFailed(path, e, kept=path.exists()) from None
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise WriteFailed(path, e, kept=path.exists()) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(f, data: bytes) -> None:
    """Write and flush (a full disk shows up here, not later in close)."""
    f.write(data)
    f.flush()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


class NotJSON(EdgeeffError):
    """A document that holds a number JSON cannot: NaN or +-infinity (RFC 8259 has neither;
    Python's json would write the non-standard ``NaN`` / ``Infinity``). ``where`` is the key
    path of the first one (``$.budgets.max_latency_ms``), ``value`` the number."""

    def __init__(self, where: str, value: float, what: str = "JSON output"):
        self.where, self.value = where, value
        super().__init__(f"cannot write {what}: {where} is {value}, which JSON cannot hold")


def _first_non_finite(obj, where: str = "$"):
    if isinstance(obj, float) and not math.isfinite(obj):
        return where, obj
    items = (obj.items() if isinstance(obj, dict)
             else enumerate(obj) if isinstance(obj, (list, tuple)) else ())
    for k, v in items:
        found = _first_non_finite(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}")
        if found:
            return found
    return None


def json_text(obj, what: str = "JSON output", **kw) -> str:
    """``json.dumps(obj, **kw)`` that refuses NaN and infinity (:class:`NotJSON`, naming the
    key) instead of writing them: every JSON document and line edgeeff writes goes through it."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        found = _first_non_finite(obj)
        if found is None:
            raise
        raise NotJSON(*found, what=what) from None


def finite_or_none(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON's null): for records in
    which a missing figure is legitimately NaN (an epoch without a loss), before writing."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented JSON, atomically; :class:`NotJSON` (nothing written) if it holds a
    NaN or an infinity."""
    write_text_atomic(path, json_text(obj, what=str(path), indent=2, sort_keys=False) + "\n")


class OutputExists(FieldError):
    """An output folder is already there and ``force`` was not given (the field the message
    names: the CLI shows its flag)."""

    def __init__(self, path: Path):
        super().__init__(f"{path} exists; pass {{force}} to replace it", "force")
        self.path = path


def check_out(out: str | os.PathLike, force: bool = False) -> Path:
    """The one check before writing an output folder (run it before any slow work)."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExists(out)
    if out.exists() and not out.is_dir():
        raise EdgeeffError(f"{out} exists and is not a folder")
    return out


_interrupt: list[int] = []  # signals the CLI has seen (see note_interrupt)


def note_interrupt(signum: int) -> None:
    """Record SIGINT/SIGTERM. The exception a signal raises can be swallowed when it fires
    inside Python code that native code called (TensorFlow's calibrator runs the
    representative-data generator that way), so outputs also check this latch before they
    are published."""
    _interrupt.append(signum)


def interrupted() -> int | None:
    """The first signal recorded by :func:`note_interrupt`, if any."""
    return _interrupt[0] if _interrupt else None


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt when a SIGINT/SIGTERM has been recorded; else do nothing.

    Call it first in every handler that turns an exception into an error (``except
    Exception as e: raise_if_interrupted(); raise EdgeeffError(...)``). A Ctrl-C that
    fires while native code runs a Python callback (the converter's, the calibrator's) can be
    swallowed there and come out as some other exception -- "'NoneType' object is not
    callable" from a half-torn-down callback -- which would otherwise be reported as
    "conversion failed" with exit code 2 instead of "interrupted" with 130 / 143 (the CLI
    reads which signal it was from :func:`interrupted`).
    """
    if _interrupt:
        raise KeyboardInterrupt from None


@contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False):
    """Yield a temporary sibling folder; on success it replaces ``out`` in one rename.

    On any exception (KeyboardInterrupt included) the temporary folder is removed and ``out``
    is left as it was; a full disk or read-only file system becomes :class:`WriteFailed`
    naming ``out``.
    """
    out = check_out(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        raise WriteFailed(out, e, kept=out.exists()) from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    except WriteFailed as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteFailed(out, OSError(e.errno, e.strerror), kept=out.exists()) from None
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in DISK_ERRNOS:
            raise WriteFailed(out, e, kept=out.exists()) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if interrupted() is not None:  # an interrupt whose exception was swallowed: publish nothing
        shutil.rmtree(tmp, ignore_errors=True)
        raise KeyboardInterrupt
    with _signals_held():
        old = None
        try:
            if out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, old)
            os.replace(tmp, out)
        except OSError as e:
            if old is not None and not out.exists():
                os.replace(old, out)
            shutil.rmtree(tmp, ignore_errors=True)
            raise WriteFailed(out, e, kept=out.exists()) from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait until the block is done, then take effect (main thread only:
    elsewhere Python delivers no signals anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    sigs = [signal.SIGINT, signal.SIGTERM]
    prev = {s: signal.getsignal(s) for s in sigs}
    try:
        for s in sigs:
            signal.signal(s, lambda signum, frame: got.append(signum))
        yield
    finally:
        for s, h in prev.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        for s in got[:1]:
            signal.raise_signal(s)  # now: the handler the caller had (KeyboardInterrupt...)

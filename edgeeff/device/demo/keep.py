"""``demo --keep-unsure DIR``: keep the frames the model is unsure of, the ones worth labelling
next.

**Which frames.** A frame is *unsure* when its top-1 score is below ``below`` (``--below``,
default :data:`DEFAULT_BELOW`). One threshold on the top-1 score, not a second one on the
top-1/top-2 margin: the scores are a softmax, so top-1 + top-2 <= 1, and a small margin m
already means a low top-1 (top-1 <= (1 + m) / 2: a margin under 0.2 is a top-1 under 0.6);
top-1 also catches the frame the model spreads over many classes, which a margin misses
(0.30 / 0.10 / 0.10 / ...). One number is one thing to explain and tune.

**How many.** At most one frame is kept per ``gap`` frames (``--keep-gap``, default
:data:`DEFAULT_GAP`: a camera that stares at one puzzling object for a minute gives a few
frames of it, not 1,800), counted in frames rather than seconds so that a folder or video
source keeps the same frames on every run. At most ``max_kept`` (``--max-kept``) kept frames
sit in DIR, those of earlier runs included: when DIR is full, keeping **stops** (one line on
stderr) rather than deleting the oldest: a kept frame is unlabelled data that only the user
may throw away, and a bounded folder is one the user can actually review. Labelling a frame
(moving it out of DIR) makes room again on the next run.

**What is written.** ``DIR/unsure-<UTC time>-<frame>.jpg``, the full camera frame, and beside
it ``.json`` with the model's guess (its top-k with scores), the frame number, the time, the
threshold and the source. Each file is written to a temporary name and renamed; the JSON
first, so a JPEG that is visible always has its guess. Encoding and writing run on the
:class:`Keeper`'s own thread, fed by the demo's reporter thread (never the inference thread)
through a bounded queue; should the disk fall that far behind, a frame is dropped (counted)
instead of holding inference back. A write that fails (a full disk) is reported once and
ends keeping; the demo goes on.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgeeff.core import artifacts as A
from edgeeff.core import fsutil
from edgeeff.core.errors import EdgeeffError

DEFAULT_BELOW = 0.5
DEFAULT_GAP = 15
DEFAULT_MAX_KEPT = 500
PREFIX = "unsure-"
QUEUE_SIZE = 16
JPEG_QUALITY = 95
_STOP = object()


@dataclass(frozen=True)
class KeepUnsure:
    """The ``--keep-unsure`` settings: where, below which top-1 score, how often, how many."""

    folder: Path
    below: float = DEFAULT_BELOW
    gap: int = DEFAULT_GAP
    max_kept: int = DEFAULT_MAX_KEPT

    def __post_init__(self):
        if not 0.0 < self.below <= 1.0:
            raise EdgeeffError(f"--below must be in (0, 1], got {self.below:g}")
        if self.gap < 1 or self.max_kept < 1:
            raise EdgeeffError("--keep-gap and --max-kept must be at least 1")

    def prepared(self) -> KeepUnsure:
        """Create the folder (bad input fails here, before the camera opens)."""
        f = Path(self.folder)
        if f.exists() and not f.is_dir():
            raise EdgeeffError(f"--keep-unsure {f}: exists and is not a folder")
        try:
            f.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EdgeeffError(f"--keep-unsure {f}: cannot create it ({e.strerror or e})"
                               ) from None
        return self


def kept_files(folder: Path) -> list[Path]:
    """The kept frames in ``folder`` (earlier runs' included), oldest first."""
    return sorted(p for p in Path(folder).glob(f"{PREFIX}*.jpg") if p.is_file())


class Keeper(threading.Thread):
    """Decides (:meth:`offer`, on the reporter thread) and writes (its own thread) the unsure
    frames of a run."""

    def __init__(self, cfg: KeepUnsure, source: str = "", model: str = "", err=None):
        super().__init__(daemon=True, name="edgeeff-keeper")
        self.cfg, self.source, self.model = cfg, source, model
        self.err = err or sys.stderr
        self.q: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.present = len(kept_files(cfg.folder))
        self.queued = 0  # frames accepted by offer (written, or being written)
        self.kept = 0  # frames written
        self.dropped = 0  # unsure frames dropped because the writer was behind
        self.last = None  # the frame number last accepted
        self.full_noted = False
        self.failed: str | None = None

    # ------------------------------------------------------------ the reporter thread's side

    def offer(self, n: int, frame, top: list[dict]) -> bool:
        """Queue frame ``n`` for writing if it is unsure, outside the gap and DIR has room."""
        if not top or top[0]["score"] >= self.cfg.below or self.failed is not None:
            return False
        if self.last is not None and n - self.last < self.cfg.gap:
            return False
        if self.present + self.queued >= self.cfg.max_kept:
            if not self.full_noted:
                self.full_noted = True
                print(f"edgeeff demo: --keep-unsure {self.cfg.folder} holds "
                      f"{self.cfg.max_kept} frames (--max-kept): keeping no more; label or "
                      "move them to make room", file=self.err)
            return False
        meta = {"frame": n, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "top": top, "below": self.cfg.below, "source": self.source,
                "model": self.model}
        try:
            self.q.put_nowait((n, frame, meta))
        except queue.Full:
            self.dropped += 1
            return False
        self.last = n
        self.queued += 1
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and end the thread."""
        if self.is_alive():
            self.q.put(_STOP)
            self.join(timeout)

    # ------------------------------------------------------------ the writer thread

    def run(self) -> None:
        import cv2

        while True:
            item = self.q.get()
            if item is _STOP:
                return
            if self.failed is not None:
                continue
            n, frame, meta = item
            stem = (f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
                    f"-{int(time.time() * 1000) % 1000:03d}-{n:06d}")
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            try:
                if not ok:
                    raise OSError(f"cannot encode frame {n} as JPEG")
                meta = {**meta, "image": f"{stem}.jpg"}
                fsutil.write_text_atomic(self.cfg.folder / (stem + A.JSON_SUFFIX),
                                         json.dumps(meta, indent=2, allow_nan=False) + "\n")
                fsutil.write_bytes_atomic(self.cfg.folder / f"{stem}.jpg", buf.tobytes())
                self.kept += 1
            except (OSError, EdgeeffError) as e:
                (self.cfg.folder / (stem + A.JSON_SUFFIX)).unlink(missing_ok=True)  # no orphan guess
                self.failed = str(e)
                print(f"edgeeff demo: --keep-unsure stopped: {e}", file=self.err)

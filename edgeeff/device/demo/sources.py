"""Where the demo's frames come from: a camera, the Pi camera, a video file, an image folder.

Each source yields BGR uint8 frames from ``frames()`` and releases its device in ``close()``.
:class:`ReconnectingSource` reopens a live source that fails (``--reconnect``);
:class:`LoopingSource` starts a finite one (video, folder, sample clip) again when it ends, so a
served page never goes blank.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from edgeeff.core.data import cache_dir, data_dir
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import raise_if_interrupted
from edgeeff.data.images import IMAGE_SUFFIXES, list_images, load_bgr

# a video file: this many undecodable frames in a row past the container's frame count is
# the end of the file (before it, a failed read is a damaged frame, skipped)
MAX_BAD_RUN = 30
# --reconnect: wait this long before each reopening attempt (the last one repeats)
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class DemoError(EdgeeffError):
    """A source that failed at run time (camera gone): exit code 1 after a clean shutdown."""


class Source:
    """Where frames come from: subclass it and give ``frames()`` (and ``close()`` if there is
    a device to release) to classify frames from anything (see ``run_demo``'s ``source``).

    ``live``: frames come at their own pace (a camera), so a stale one is dropped rather than
    lag; otherwise every frame is read in turn (a file, a folder). ``skipped``: frames or files
    that could not be decoded. ``reconnects`` and ``reconnecting``: how many times the source
    was reopened after it failed, and whether it is reopening now (no frame can come, so the
    demo does not time out); only :class:`ReconnectingSource` reopens.
    """

    live = False
    name = "source"
    skipped = 0  # frames or files that could not be decoded, skipped
    reconnects = 0

    @property
    def reconnecting(self) -> bool:
        return False

    def frames(self):  # yields BGR uint8 frames
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageFolderSource(Source):
    def __init__(self, folder: Path):
        self.files = list_images(folder)
        if not self.files:
            raise EdgeeffError(f"no images (jpg/png/bmp/webp) under {folder}")
        self.name = f"images:{folder}"

    def frames(self):
        for p in self.files:
            img = load_bgr(p)
            if img is None:
                self.skipped += 1
                continue
            yield img


@contextlib.contextmanager
def _opencv_errors_only(cv2):
    """OpenCV logs only errors in the block: a camera that cannot be opened prints
    ``[ WARN:0@0.058] global cap_v4l.cpp ... can't open camera by index`` lines of its own,
    and the caller says what went wrong in one line. Builds without ``cv2.utils.logging``
    keep their level."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    try:
        old = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    except AttributeError:
        yield
        return
    try:
        yield
    finally:
        logging.setLogLevel(old)


class VideoSource(Source):
    """A video file, or a camera by index (``0``) or device path (``/dev/video0``)."""

    def __init__(self, target: str):
        import cv2

        self.is_camera = target.isdigit() or target.startswith("/dev/video")
        self.live = self.is_camera
        self.name = ("camera:" if self.is_camera else "video:") + target
        if not self.is_camera and not Path(target).is_file():
            raise EdgeeffError(f"video file not found: {target}")
        with _opencv_errors_only(cv2):  # its WARN lines would precede our one-line error
            self.cap = cv2.VideoCapture(int(target) if target.isdigit() else target)
        if not self.cap.isOpened():
            if self.is_camera:
                raise EdgeeffError(
                    f"cannot open camera {target}: check it is connected (ls /dev/video*) and "
                    "not used by another program; for a Raspberry Pi camera module use "
                    "--source picamera")
            raise EdgeeffError(f"cannot decode video {target} (is it a video file?)")

    def frames(self):
        import cv2

        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if not self.is_camera else 0
        failures = reads = bad_run = 0
        while True:
            ok, frame = self.cap.read()
            reads += 1
            if ok and frame is not None:
                failures = 0
                self.skipped += bad_run  # damaged frames with a good one after them
                bad_run = 0
                yield frame
                continue
            if not self.is_camera:
                bad_run += 1
                if reads < count or bad_run <= MAX_BAD_RUN:
                    continue  # a damaged frame: go on to the next one
                return  # end of file
            failures += 1
            if failures > 10:
                raise DemoError(f"{self.name} stopped delivering frames")
            time.sleep(0.05)

    def close(self) -> None:
        self.cap.release()


class PiCameraSource(Source):
    live = True
    name = "picamera"

    def __init__(self, size=(640, 480)):
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise EdgeeffError(
                "picamera2 is not importable: on Raspberry Pi OS run 'sudo apt install "
                "python3-picamera2' and create the venv with --system-site-packages "
                "(or use a USB camera: --source 0)") from None
        try:
            self.cam = Picamera2()
            self.cam.configure(self.cam.create_video_configuration(
                main={"size": size, "format": "RGB888"}))  # RGB888 is BGR order in memory
            self.cam.start()
        except Exception as e:  # noqa: BLE001 - libcamera raises many kinds
            raise_if_interrupted()
            raise EdgeeffError(f"cannot start the Pi camera: {e}") from None

    def frames(self):
        while True:
            yield self.cam.capture_array()

    def close(self) -> None:
        try:
            self.cam.stop()
        finally:  # stop() keeps the camera acquired: a new Picamera2() (reconnect) would fail
            self.cam.close()


class ReconnectingSource(Source):
    """A live source that is reopened (``opener()``) with backoff when it fails or ends.

    Runs in the capture thread; every attempt is handed to ``emit`` as an event dict, and
    ``reconnecting`` is true while no frames can come (the consumer does not time out then).
    Any source with ``frames()`` and ``close()`` can be wrapped (a camera, the Pi camera).
    """

    live = True

    def __init__(self, opener, first: Source):
        self.opener, self.src, self.name = opener, first, first.name
        self.stop_event = threading.Event()
        self._reopening = threading.Event()
        self.emit = lambda event: None
        self.reconnects = 0
        self._skipped_before = 0

    @property
    def skipped(self) -> int:
        return self._skipped_before + (self.src.skipped if self.src is not None else 0)

    @property
    def reconnecting(self) -> bool:
        return self._reopening.is_set()

    def frames(self):
        while not self.stop_event.is_set():
            try:
                yield from self.src.frames()
                reason = f"{self.name} ended"
            except Exception as e:  # noqa: BLE001 - whatever the camera raised
                reason = str(e) or type(e).__name__
            if self.stop_event.is_set():
                return
            self._close_current()
            self.src = self._reopen(reason)
            if self.src is None:
                return

    def _close_current(self) -> None:
        src, self.src = self.src, None
        if src is not None:
            self._skipped_before += src.skipped
            try:
                src.close()
            except Exception:  # noqa: BLE001,S110 - a vanished device may fail to close
                pass

    def _reopen(self, reason: str) -> Source | None:
        self._reopening.set()
        try:
            attempt = 0
            while True:
                delay = RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)]
                attempt += 1
                if self.stop_event.wait(delay):
                    return None
                event = {"event": "reconnect", "attempt": attempt, "source": self.name,
                         "delay_s": delay, "reason": reason}
                try:
                    src = self.opener()
                except Exception as e:  # noqa: BLE001 - EdgeeffError, or the driver's own
                    self.emit({**event, "ok": False, "error": str(e) or type(e).__name__})
                    continue
                if self.stop_event.is_set():
                    src.close()
                    return None
                self.reconnects += 1
                self.emit({**event, "ok": True, "error": None})
                return src
        finally:
            self._reopening.clear()

    def close(self) -> None:
        self.stop_event.set()
        self._close_current()


def sample_clip() -> Path:
    """A short clip made from the bundled photos (cached), for trying the demo anywhere."""
    import cv2

    path = cache_dir() / "sample" / "edgeeff-sample.avi"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["chelsea_0.jpg", "coffee_0.jpg", "rocket_0.jpg", "grace_hopper_0.jpg"]
    size = (320, 240)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.avi")
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for n in names:
        img = load_bgr(data_dir("calibration") / n)
        for k in range(8):  # a slow zoom, 8 frames per photo
            h, wd = img.shape[:2]
            m = 1.0 - 0.02 * k
            ch, cw = int(h * m), int(wd * m)
            y, x = (h - ch) // 2, (wd - cw) // 2
            w.write(cv2.resize(img[y:y + ch, x:x + cw], size, interpolation=cv2.INTER_AREA))
    w.release()
    os.replace(tmp, path)
    return path


def open_source(source: str) -> Source:
    if source == "picamera":
        return PiCameraSource()
    if source == "sample":
        return VideoSource(str(sample_clip()))
    p = Path(source)
    if p.is_dir():
        return ImageFolderSource(p)
    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
        return _SingleImage(p)
    return VideoSource(source)


class _SingleImage(ImageFolderSource):
    def __init__(self, path: Path):
        self.files, self.name = [path], f"image:{path}"


class LoopingSource(Source):
    """A finite source read again from the start whenever it ends (``opener()`` reopens it).

    Used while serving, so viewers keep seeing pictures after the last frame of a video or
    folder. A pass that yields no frame at all ends the loop (nothing to show, no busy spin).
    Damaged frames skipped in every pass are summed in ``skipped``.
    """

    def __init__(self, opener, first: Source):
        self.opener, self.src, self.name = opener, first, first.name
        self.passes = 0
        self._skipped_before = 0
        self._closed = False

    @property
    def skipped(self) -> int:
        return self._skipped_before + (self.src.skipped if self.src is not None else 0)

    def frames(self):
        while not self._closed:
            got = False
            for frame in self.src.frames():
                got = True
                yield frame
            self.passes += 1
            if not got or self._closed:
                return
            old, self.src = self.src, None
            self._skipped_before += old.skipped
            old.close()
            self.src = self.opener()

    def close(self) -> None:
        self._closed = True
        if self.src is not None:
            self.src.close()

"""``edgeeff demo``: classify a camera, a video file or an image folder, live.

Needs only a TFLite runtime and OpenCV (``pip install 'edgeeff[runtime]'``), never TensorFlow.
Capture runs in its own thread and hands frames over a bounded queue; a live camera drops the
stale frame instead of lagging, a file or folder is processed frame by frame. Each frame is
cropped, resized and colour-converted straight into the interpreter's input buffer.

Damaged input does not end the run: a video frame that fails to decode, an unreadable image
in a folder, is skipped and counted (``skipped_frames`` in the summary). A camera that stops
delivering ends the run with exit code 1 after a clean shutdown, or, with ``reconnect=True``
(``--reconnect``), is closed and reopened with backoff, each attempt reported as an event
(``{"event": "reconnect", "attempt": n, ...}``, a JSON line in headless/JSON mode).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.preprocess import Preprocessor
from edgeeff.device.images import IMAGE_SUFFIXES, frame_into, list_images, load_bgr

QUEUE_SIZE = 2
CAMERA_TIMEOUT_S = 5.0
# a video file: this many undecodable frames in a row past the container's frame count is
# the end of the file (before it, a failed read is a damaged frame, skipped)
MAX_BAD_RUN = 30
# --reconnect: wait this long before each reopening attempt (the last one repeats)
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


def need_cv2() -> None:
    try:
        import cv2  # noqa: F401
    except ImportError:
        raise EdgeeffError("the demo needs OpenCV: pip install 'edgeeff[runtime]'") from None


def default_threads() -> int:
    """Interpreter threads: every core but one (kept for capture and decoding), at most 4."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))
_END = object()


class DemoError(EdgeeffError):
    """A source that failed at run time (camera gone): exit code 1 after a clean shutdown."""


# --------------------------------------------------------------------------- sources


class Source:
    live = False
    name = "source"
    skipped = 0  # frames or files that could not be decoded, skipped

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


class VideoSource(Source):
    """A video file, or a camera by index (``0``) or device path (``/dev/video0``)."""

    def __init__(self, target: str):
        import cv2

        self.is_camera = target.isdigit() or target.startswith("/dev/video")
        self.live = self.is_camera
        self.name = ("camera:" if self.is_camera else "video:") + target
        if not self.is_camera and not Path(target).is_file():
            raise EdgeeffError(f"video file not found: {target}")
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
    ``reconnecting`` is set while no frames can come (the consumer does not time out then).
    Any source with ``frames()`` and ``close()`` can be wrapped (a camera, the Pi camera).
    """

    live = True

    def __init__(self, opener, first: Source):
        self.opener, self.src, self.name = opener, first, first.name
        self.stop_event = threading.Event()
        self.reconnecting = threading.Event()
        self.emit = lambda event: None
        self.reconnects = 0
        self._skipped_before = 0

    @property
    def skipped(self) -> int:
        return self._skipped_before + (self.src.skipped if self.src is not None else 0)

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
        self.reconnecting.set()
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
            self.reconnecting.clear()

    def close(self) -> None:
        self.stop_event.set()
        self._close_current()


def sample_clip() -> Path:
    """A short clip made from the bundled photos (cached), for trying the demo anywhere."""
    import cv2

    from edgeeff.core.data import cache_dir, data_dir

    path = cache_dir() / "sample" / "edgeeff-sample.avi"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["chelsea_0.jpg", "coffee_0.jpg", "rocket_0.jpg", "grace_hopper_0.jpg"]
    size = (320, 240)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.avi")
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for n in names:
        img = cv2.imread(str(data_dir("calibration") / n), cv2.IMREAD_COLOR)
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


# --------------------------------------------------------------------------- pipeline


class _Capture(threading.Thread):
    """Reads and preprocesses frames in its own thread, into a fixed pool of input buffers.

    The pool (``QUEUE_SIZE + 2`` buffers of the model's input size) is allocated once: the
    thread crops/resizes/colour-converts each frame straight into a free buffer and queues it,
    so preprocessing overlaps inference and nothing is allocated per frame. When no buffer is
    free, a live source drops the stalest queued frame (never lag behind the camera) while a
    file or folder waits (every frame is classified).
    """

    def __init__(self, src: Source, pp: Preprocessor):
        super().__init__(daemon=True, name="edgeeff-capture")
        self.src, self.pp = src, pp
        if isinstance(src, ReconnectingSource):  # events travel in order with the frames
            src.emit = lambda event: self.q.put(event)
        resolution = pp.resolution
        self.bufs = np.empty((QUEUE_SIZE + 2, resolution, resolution, 3), np.uint8)
        self._scratch = np.empty((resolution, resolution, 3), np.uint8)
        self.free: queue.Queue = queue.Queue()
        for i in range(len(self.bufs)):
            self.free.put(i)
        self.q: queue.Queue = queue.Queue()
        # a reconnecting source sleeps on this same event, so stopping wakes it at once
        self.stop_event = getattr(src, "stop_event", None) or threading.Event()
        self.error = None
        self.dropped = self.skipped = 0

    def release(self, slot: int) -> None:
        self.free.put(slot)

    def _slot(self) -> int | None:
        while not self.stop_event.is_set():
            try:
                return self.free.get_nowait()
            except queue.Empty:
                pass
            if self.src.live:
                slot = self._drop_stalest()
                if slot is not None:
                    return slot
            try:
                return self.free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _drop_stalest(self) -> int | None:
        """Take the oldest queued frame out (its buffer makes room); events stay queued."""
        with self.q.mutex:
            for i, item in enumerate(self.q.queue):
                if isinstance(item, tuple):
                    del self.q.queue[i]
                    self.dropped += 1
                    return item[1]
        return None

    def run(self) -> None:
        import cv2

        try:
            for frame in self.src.frames():
                slot = None if self.stop_event.is_set() else self._slot()
                if slot is None:
                    break
                try:
                    frame_into(frame, self.pp, self.bufs[slot], self._scratch)
                except (ValueError, cv2.error):  # a damaged frame (empty, odd shape)
                    self.skipped += 1
                    self.release(slot)
                    continue
                self.q.put((frame, slot))
        except Exception as e:  # noqa: BLE001 - reported by the consumer
            self.error = e
        finally:
            self.q.put(_END)


def _overlay(frame, top, latency_ms, fps):
    import cv2

    y = 24
    for t in top:
        cv2.putText(frame, f"{t['label'][:28]} {t['score']:.2f}", (8, y),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
        y += 24
    cv2.putText(frame, f"{fps:.1f} FPS  {latency_ms:.1f} ms", (8, y + 4),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 200, 255), 2)
    return frame


def _report_event(ev: dict, as_lines: bool, out, err) -> None:
    if as_lines:
        out.write(json.dumps(ev) + "\n")
        out.flush()
    else:
        res = "reconnected" if ev["ok"] else f"failed ({ev['error']})"
        print(f"edgeeff demo: {ev['source']} lost ({ev['reason']}); reconnect attempt "
              f"{ev['attempt']} after {ev['delay_s']:g} s: {res}", file=err)


def _next_item(cap: _Capture, src: Source, on_event):
    """The next queued frame (or _END); events queued before it are reported first. No frame
    for CAMERA_TIMEOUT_S is an error, except while a reconnecting source is reopening."""
    deadline = time.monotonic() + CAMERA_TIMEOUT_S
    while True:
        try:
            item = cap.q.get(timeout=0.1)
        except queue.Empty:
            reconnecting = getattr(src, "reconnecting", None)
            if reconnecting is not None and reconnecting.is_set():
                deadline = time.monotonic() + CAMERA_TIMEOUT_S
            elif time.monotonic() > deadline:
                raise DemoError(f"{src.name} delivered no frame for {CAMERA_TIMEOUT_S:.0f}s"
                                ) from None
            continue
        if isinstance(item, dict):
            on_event(item)
            deadline = time.monotonic() + CAMERA_TIMEOUT_S
            continue
        return item


def run_demo(clf, source: str, headless: bool, as_json: bool, top_k: int,
             max_frames: int | None, out=None, err=None, reconnect: bool = False) -> dict:
    out, err = out or sys.stdout, err or sys.stderr  # the streams of the moment, not of import
    src = open_source(source)
    if reconnect:
        if src.live:
            src = ReconnectingSource(lambda: open_source(source), src)
        else:
            print(f"edgeeff demo: --reconnect applies to cameras; {src.name} is read once",
                  file=err)
    show = not headless
    if show:
        import cv2

        if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not \
                os.environ.get("WAYLAND_DISPLAY"):
            src.close()
            raise EdgeeffError("no display found: run with --headless (JSON lines on stdout)")
    print(f"edgeeff demo: {clf.path.name} on {clf.runtime}"
          f"{' + ' + clf.delegate if clf.delegate else ''}, input {clf.resolution}px "
          f"{np.dtype(clf.input_dtype).name}{' (raw pixels)' if clf.raw_pixel_input else ''}, "
          f"source {src.name}", file=err)
    cap = _Capture(src, clf.preprocessor)
    cap.start()
    times: deque = deque(maxlen=30)
    n, lat_sum, t_prev = 0, 0.0, time.perf_counter()
    t_start = t_prev
    try:
        while max_frames is None or n < max_frames:
            item = _next_item(cap, src, lambda ev: _report_event(ev, headless or as_json,
                                                                 out, err))
            if item is _END:
                if cap.error is not None:
                    raise cap.error if isinstance(cap.error, EdgeeffError) else DemoError(
                        f"{src.name} failed: {cap.error}")
                break
            frame, slot = item
            clf.set_input(cap.bufs[slot])  # one copy into the interpreter's input
            cap.release(slot)
            t = time.perf_counter()
            scores = clf.invoke()
            latency = (time.perf_counter() - t) * 1000.0
            now = time.perf_counter()
            times.append(now - t_prev)
            t_prev = now
            fps = len(times) / sum(times) if sum(times) > 0 else 0.0
            top = clf.top_k(scores, top_k)
            n += 1
            lat_sum += latency
            if headless or as_json:
                out.write(json.dumps({"frame": n, "top": top, "latency_ms": round(latency, 3),
                                      "fps": round(fps, 2)}) + "\n")
                out.flush()
            if show:
                import cv2

                cv2.imshow("edgeeff", _overlay(frame, top, latency, fps))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
    finally:
        cap.stop_event.set()
        # let the capture thread leave its read before the source is released under it
        # (releasing a VideoCapture mid-read can abort the process)
        cap.join(timeout=2.0)
        src.close()
        if show:
            import cv2

            cv2.destroyAllWindows()
    wall = time.perf_counter() - t_start
    skipped = src.skipped + cap.skipped
    summary = {"frames": n, "fps": round(n / wall, 2) if wall > 0 else 0.0,
               "mean_latency_ms": round(lat_sum / n, 3) if n else None,
               "dropped_frames": cap.dropped, "skipped_frames": skipped,
               "reconnects": getattr(src, "reconnects", 0), "runtime": clf.runtime}
    print(f"edgeeff demo: {n} frames, {summary['fps']} FPS end to end, mean inference "
          f"{summary['mean_latency_ms']} ms, {cap.dropped} stale frames dropped, "
          f"{skipped} undecodable skipped"
          + (f", {summary['reconnects']} reconnects" if reconnect and src.live else ""),
          file=err)
    return summary

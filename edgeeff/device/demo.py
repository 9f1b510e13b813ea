"""``edgeeff demo``: classify a camera, a video file or an image folder, live.

Needs only a TFLite runtime and OpenCV (``pip install 'edgeeff[runtime]'``), never TensorFlow.
Capture runs in its own thread and hands frames over a bounded queue; a live camera drops the
stale frame instead of lagging, a file or folder is processed frame by frame. Each frame is
cropped, resized and colour-converted straight into the interpreter's input buffer.
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
            if img is not None:
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
        failures = 0
        while True:
            ok, frame = self.cap.read()
            if ok and frame is not None:
                failures = 0
                yield frame
                continue
            if not self.is_camera:
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
        self.cam.stop()


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
        resolution = pp.resolution
        self.bufs = np.empty((QUEUE_SIZE + 2, resolution, resolution, 3), np.uint8)
        self._scratch = np.empty((resolution, resolution, 3), np.uint8)
        self.free: queue.Queue = queue.Queue()
        for i in range(len(self.bufs)):
            self.free.put(i)
        self.q: queue.Queue = queue.Queue()
        self.stop_event, self.error = threading.Event(), None
        self.dropped = 0

    def release(self, slot: int) -> None:
        self.free.put(slot)

    def _slot(self) -> int | None:
        while not self.stop_event.is_set():
            try:
                return self.free.get_nowait()
            except queue.Empty:
                pass
            if self.src.live:
                try:
                    _, slot = self.q.get_nowait()  # the stalest frame makes room
                    self.dropped += 1
                    return slot
                except queue.Empty:
                    pass
            try:
                return self.free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def run(self) -> None:
        try:
            for frame in self.src.frames():
                slot = None if self.stop_event.is_set() else self._slot()
                if slot is None:
                    break
                frame_into(frame, self.pp, self.bufs[slot], self._scratch)
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


def run_demo(clf, source: str, headless: bool, as_json: bool, top_k: int,
             max_frames: int | None, out=sys.stdout, err=sys.stderr) -> dict:
    src = open_source(source)
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
            try:
                item = cap.q.get(timeout=CAMERA_TIMEOUT_S)
            except queue.Empty:
                raise DemoError(f"{src.name} delivered no frame for {CAMERA_TIMEOUT_S:.0f}s"
                                ) from None
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
    summary = {"frames": n, "fps": round(n / wall, 2) if wall > 0 else 0.0,
               "mean_latency_ms": round(lat_sum / n, 3) if n else None,
               "dropped_frames": cap.dropped, "runtime": clf.runtime}
    print(f"edgeeff demo: {n} frames, {summary['fps']} FPS end to end, mean inference "
          f"{summary['mean_latency_ms']} ms, {cap.dropped} stale frames dropped", file=err)
    return summary

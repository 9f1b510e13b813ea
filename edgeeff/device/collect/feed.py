"""The camera side of ``collect``: one thread reads the source and keeps its newest frame.

The source is the demo's (:func:`edgeeff.device.demo.sources.open_source`: a camera, the Pi
camera, a video, an image folder, ``sample``). A finite one (video, folder, the sample clip)
starts again when it ends and is read at its own frame rate (a folder at
:data:`FOLDER_FPS`), not as fast as it decodes. Frames are kept as the camera gives them (full
resolution, BGR); a photo is always a frame newer than the previous photo's.
"""

from __future__ import annotations

import threading

from edgeeff.device.demo import sources

FOLDER_FPS = 10.0  # an image folder shown as a camera
STOP_JOIN_S = 5.0


class Feed(threading.Thread):
    """Reads ``source`` in its own thread; :meth:`frame_after` hands out new frames."""

    def __init__(self, source: str):
        super().__init__(daemon=True, name="edgeeff-collect-feed")
        src = sources.open_source(source)  # a bad source fails here, before serving
        self.interval = 0.0
        if not src.live:
            fps = FOLDER_FPS
            cap = getattr(src, "cap", None)
            if cap is not None:
                import cv2

                fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or FOLDER_FPS
            self.interval = 1.0 / max(1.0, min(fps, 60.0))
            src = sources.LoopingSource(lambda: sources.open_source(source), src)
        self.src = src
        self.name_shown = src.name
        self.stop_event = threading.Event()
        self.cond = threading.Condition()
        self.latest = None  # (seq, frame)
        self.error: str | None = None

    def run(self) -> None:
        seq = 0
        try:
            for frame in self.src.frames():
                if self.stop_event.is_set():
                    return
                seq += 1
                with self.cond:
                    self.latest = (seq, frame)
                    self.cond.notify_all()
                if self.interval and self.stop_event.wait(self.interval):
                    return
            self.error = f"{self.src.name} ended"
        except Exception as e:  # noqa: BLE001 - whatever the camera driver raised
            self.error = str(e) or type(e).__name__
        finally:
            with self.cond:
                self.cond.notify_all()

    def frame_after(self, seq: int, timeout: float):
        """The newest frame if it is newer than ``seq``, waiting up to ``timeout`` seconds
        for one; None when none comes (the source stopped or stalled)."""
        with self.cond:
            self.cond.wait_for(lambda: (self.latest is not None and self.latest[0] > seq)
                               or self.error is not None or self.stop_event.is_set(), timeout)
            rec = self.latest
        return rec if rec is not None and rec[0] > seq else None

    def close(self) -> None:
        self.stop_event.set()
        # the read in progress ends before the device is released under it (releasing a
        # VideoCapture mid-read can abort the process)
        if self.is_alive():
            self.join(STOP_JOIN_S)
        if self.is_alive():  # still inside a read (a loaded machine, a slow camera): releasing
            return  # the capture under it can abort the process; the exit releases it
        self.src.close()

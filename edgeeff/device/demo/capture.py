"""The capture thread: reads frames and preprocesses them into a fixed pool of input buffers.

Preprocessing (crop, resize, colour conversion, the model's input values) overlaps inference
and allocates nothing per frame; a live source drops its stalest frame rather than lag, a file
waits for the model.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from edgeeff.core.preprocess import Preprocessor
from edgeeff.data.images import frame_into
from edgeeff.device.demo.sources import ReconnectingSource, Source

QUEUE_SIZE = 2
END = object()  # queued after the last frame


class Capture(threading.Thread):
    """Reads and preprocesses frames in its own thread, into a fixed pool of input buffers.

    The pool (``QUEUE_SIZE + 2`` input tensors, ``[1, R, R, 3]`` in the model's dtype) is
    allocated once: the thread crops/resizes/colour-converts each frame and maps it to the
    model's input values (:meth:`Preprocessor.to_input`) straight into a free buffer and queues
    it, so the inference thread only hands the buffer to ``invoke`` and nothing is allocated
    per frame. When no buffer is
    free, a live source drops the stalest queued frame (never lag behind the camera) while a
    file or folder waits (every frame is classified).
    """

    def __init__(self, src: Source, pp: Preprocessor):
        super().__init__(daemon=True, name="edgeeff-capture")
        self.src, self.pp = src, pp
        if isinstance(src, ReconnectingSource):  # events travel in order with the frames
            src.emit = lambda event: self.q.put(event)
        r = pp.resolution
        self.bufs = np.empty((QUEUE_SIZE + 2, 1, r, r, 3), pp.input_dtype)
        self._scratch = np.empty((r, r, 3), np.uint8)
        self._lut = pp.lut()
        raw = self.bufs.dtype == np.uint8 and self._lut is None  # the input is the RGB crop
        self._rgb = None if raw else np.empty((r, r, 3), np.uint8)
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
                    if self._rgb is None:
                        frame_into(frame, self.pp, self.bufs[slot][0], self._scratch)
                    else:
                        frame_into(frame, self.pp, self._rgb, self._scratch)
                        self.pp.to_input(self._rgb, self.bufs[slot][0], self._lut)
                except (ValueError, cv2.error):  # a damaged frame (empty, odd shape)
                    self.skipped += 1
                    self.release(slot)
                    continue
                self.q.put((frame, slot))
        except Exception as e:  # noqa: BLE001 - reported by the consumer
            self.error = e
        finally:
            self.q.put(END)

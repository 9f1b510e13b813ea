"""The demo's outputs of each classified frame, produced off the inference thread.

After ``invoke`` the inference thread's caches hold the model, not Python's objects: top-k,
the JSON line and the server hand-over run several times slower there than on a thread that
does only that, a cost that shows in the FPS of a small model (``benchmarks/demo_fps.py``
measures the demo against the interpreter alone; its figures are in docs/benchmarks.md). The
:class:`Reporter` thread does that work (it runs beside the capture thread on the core the
interpreter leaves), in frame order, and events (reconnects) travel the same queue, so lines
stay in order. Its queue is bounded: a slow ``out`` (a pipe nobody reads) holds inference back,
as writing inline did, instead of queueing without end. A result is *held*
(:meth:`Reporter.hold`) and handed over by :meth:`Reporter.flush`, which the inference loop
calls when it would wait for the next frame anyway, or just before its next ``invoke``: the
reporter's Python then runs while ``invoke`` has released the GIL instead of holding it while the
inference thread prepares the next input (handed over at once, the two threads contend for
the GIL and both slow down). Events and :meth:`Reporter.close` flush first, so the order
stays that of the frames. An exception there (a closed pipe) ends the thread and is raised
again on the inference thread by the next hand-over or by :meth:`close`.
"""

from __future__ import annotations

import queue
import threading

from edgeeff.core.fsutil import json_text

QUEUE_SIZE = 8
_STOP = object()


class Reporter(threading.Thread):
    """Top-k, JSON line (``lines``), ``server.publish`` and ``keeper.offer`` (``--keep-unsure``,
    a :class:`~edgeeff.device.demo.keep.Keeper`) for each result handed over."""

    def __init__(self, clf, top_k: int, lines: bool, out, server=None, report_event=None,
                 keeper=None):
        super().__init__(daemon=True, name="edgeeff-reporter")
        self.clf, self.k, self.lines, self.out = clf, top_k, lines, out
        self.server, self.report_event, self.keeper = server, report_event, keeper
        self.q: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.error: BaseException | None = None
        self._held = None  # a result not yet queued (see the module docstring)

    # ------------------------------------------------------------ the inference thread's side

    def hold(self, n: int, frame, scores, latency_ms: float, fps: float, top=None) -> None:
        """Keep frame ``n``'s result until :meth:`flush` (``top``: already computed, e.g. for a
        window); a result still held is handed over first."""
        self.flush()
        self._held = (n, frame, scores, latency_ms, fps, top)

    def flush(self) -> None:
        """Hand the held result over, if there is one."""
        if self._held is not None:
            item, self._held = self._held, None
            self._put(item)

    def put_event(self, event: dict) -> None:
        """Hand an event over, after the result held (it came before the event)."""
        self.flush()
        self._put(event)

    def _put(self, item) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self.is_alive():
                    return

    def close(self, timeout: float = 5.0) -> None:
        """Write what is held and queued, end the thread; raise what it failed with."""
        self.flush()
        self.stop(timeout)
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread after what is queued (at most ``timeout``); never raises."""
        if not self.is_alive():
            return
        try:
            self.q.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self.join(timeout)

    # ------------------------------------------------------------ the reporter thread

    def run(self) -> None:
        try:
            while True:
                item = self.q.get()
                if item is _STOP:
                    return
                if isinstance(item, dict):
                    if self.report_event is not None:
                        self.report_event(item)
                    continue
                n, frame, scores, latency, fps, top = item
                if top is None:
                    top = self.clf.top_k(scores, self.k)
                payload = {"frame": n, "top": top, "latency_ms": round(latency, 3),
                           "fps": round(fps, 2)}
                line = json_text(payload)
                if self.lines:
                    self.out.write(line + "\n")
                    self.out.flush()
                if self.server is not None:
                    self.server.publish(frame, payload, line)
                if self.keeper is not None:
                    self.keeper.offer(n, frame, top)
        except BaseException as e:  # noqa: BLE001 - raised again on the inference thread
            self.error = e

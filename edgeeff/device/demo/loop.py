"""``edgeeff demo``: classify a camera, a video file or an image folder, live.

Needs only a TFLite runtime and OpenCV (the ``runtime`` extra), never TensorFlow.
Capture runs in its own thread and hands frames over a bounded queue; a live camera drops the
stale frame instead of lagging, a file or folder is processed frame by frame. Each frame is
cropped, resized, colour-converted and mapped to the model's input values there, into a pool of
input tensors. The inference thread only hands one to ``invoke``; top-k, JSON lines and the
server's copy are made by a :class:`~edgeeff.device.demo.reporter.Reporter` thread, in order.

Damaged input does not end the run: a video frame that fails to decode, an unreadable image
in a folder, is skipped and counted (``skipped_frames`` in the summary). A camera that stops
delivering ends the run with exit code 1 after a clean shutdown, or, with ``reconnect=True``
(``--reconnect``), is closed and reopened with backoff, each attempt reported as an event
(``{"event": "reconnect", "attempt": n, ...}``, a JSON line in headless/JSON mode).

With a :class:`~edgeeff.device.demo.serve.DemoServer` (``--serve``) every result is also
handed to the server, which streams it to browsers from its own threads; a finite source then
loops so the page never goes blank.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import json_text
from edgeeff.core.optional import require
from edgeeff.device.demo import sources
from edgeeff.device.demo.capture import END, Capture
from edgeeff.device.demo.keep import Keeper, KeepUnsure
from edgeeff.device.demo.reporter import Reporter
from edgeeff.device.demo.serve import overlay
from edgeeff.device.demo.sources import DemoError, LoopingSource, ReconnectingSource, Source
from edgeeff.device.profile.host import usable_cores

CAMERA_TIMEOUT_S = 5.0


def need_cv2() -> None:
    require("cv2", "the demo")


def default_threads() -> int:
    """Interpreter threads: every core this process may use (its CPU affinity: ``taskset``, a
    container's cpuset) but one, kept for capture and decoding; at most 4."""
    return max(1, min(4, usable_cores() - 1))


def capture_threads(interpreter_threads: int | None) -> int:
    """OpenCV's worker threads while the demo runs: the cores the interpreter leaves free (at
    least one). OpenCV would otherwise spread each resize over every core, the interpreter's
    too, and preempt it: the demo's FPS falls further below the interpreter's own.
    ``benchmarks/demo_fps.py`` measures that ratio (docs/benchmarks.md, "Demo end to end vs
    interpreter only")."""
    return max(1, usable_cores() - (interpreter_threads or 1))


def _opener(source: str | Callable[[], Source]) -> Callable[[], Source]:
    if isinstance(source, str):
        return lambda: sources.open_source(source)
    return source


def _report_event(ev: dict, as_lines: bool, out, err) -> None:
    if as_lines:
        out.write(json_text(ev) + "\n")
        out.flush()
    else:
        res = "reconnected" if ev["ok"] else f"failed ({ev['error']})"
        print(f"edgeeff demo: {ev['source']} lost ({ev['reason']}); reconnect attempt "
              f"{ev['attempt']} after {ev['delay_s']:g} s: {res}", file=err)


def _next_item(cap: Capture, src: Source, on_event):
    """The next queued frame (or END); events queued before it are reported first. No frame
    for CAMERA_TIMEOUT_S is an error, except while a reconnecting source is reopening."""
    deadline = time.monotonic() + CAMERA_TIMEOUT_S
    while True:
        try:
            item = cap.q.get(timeout=0.1)
        except queue.Empty:
            if src.reconnecting:
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


def run_demo(clf, source: str | Callable[[], Source], headless: bool, as_json: bool,
             top_k: int, max_frames: int | None, out=None, err=None, reconnect: bool = False,
             server=None, keep: KeepUnsure | None = None) -> dict:
    """Classify every frame of ``source``; the summary (frames, FPS, drops, skips) as a dict.

    ``clf``: a :class:`~edgeeff.device.runtime.Classifier`. ``source``: what ``--source``
    takes (:func:`~edgeeff.device.demo.sources.open_source`: a camera index or
    ``/dev/videoN``, ``picamera``, a video file, an image or a folder of them, ``sample``),
    or a function that opens a :class:`~edgeeff.device.demo.sources.Source` of your own (a
    ``Source`` subclass itself will do). It is called again to reopen the source: a live one
    that failed, under ``reconnect``; a finite one that ended, while serving.
    ``headless``: no window, one JSON line per frame on ``out`` (``as_json``: those lines as
    well as the window). ``server``, a started :class:`DemoServer`, receives every result
    instead of a window; a finite source then starts again when it ends. ``keep``
    (``--keep-unsure``) keeps the frames whose top-1 score is low, as JPEGs with the guess
    (:mod:`edgeeff.device.demo.keep`), from the reporter thread.
    """
    out, err = out or sys.stdout, err or sys.stderr  # the streams of the moment, not of import
    opener = _opener(source)
    src = opener()
    if server is not None and not src.live:
        src = LoopingSource(opener, src)
    if reconnect:
        if src.live:
            src = ReconnectingSource(opener, src)
        else:
            print(f"edgeeff demo: --reconnect applies to cameras; {src.name} is read once",
                  file=err)
    show = not headless and server is None
    if show:
        if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not \
                os.environ.get("WAYLAND_DISPLAY"):
            src.close()
            raise EdgeeffError("no display found: run with --headless (JSON lines on stdout)")
    info = (f"{clf.path.name} on {clf.runtime}"
            f"{' + ' + clf.delegate if clf.delegate else ''}, input {clf.resolution}px "
            f"{np.dtype(clf.input_dtype).name}{' (raw pixels)' if clf.raw_pixel_input else ''}, "
            f"source {src.name}")
    print(f"edgeeff demo: {info}", file=err)
    if server is not None:
        server.info = info
    lines = headless or as_json
    import cv2

    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(capture_threads(clf.num_threads))
    cap = Capture(src, clf.preprocessor)
    cap.start()
    reporter = keeper = None
    if keep is not None:
        keeper = Keeper(keep, source=src.name, model=clf.path.name, err=err)
        keeper.start()
    on_event = lambda ev: _report_event(ev, lines, out, err)  # noqa: E731
    if lines or server is not None or keeper is not None:
        reporter = Reporter(clf, top_k, lines, out, server, on_event, keeper)
        reporter.start()
        on_event = reporter.put_event  # in order with the frames before it
    times: deque = deque(maxlen=30)
    n, lat_sum, t_prev = 0, 0.0, time.perf_counter()
    t_start = t_prev
    try:
        while max_frames is None or n < max_frames:
            item = _next_item(cap, src, on_event)
            if item is END:
                if cap.error is not None:
                    raise cap.error if isinstance(cap.error, EdgeeffError) else DemoError(
                        f"{src.name} failed: {cap.error}")
                break
            frame, slot = item
            if reporter is not None:  # the reporter runs while invoke has released the GIL
                reporter.flush()
            t = time.perf_counter()
            scores = clf.invoke(cap.bufs[slot])  # the capture thread made the input tensor
            latency = (time.perf_counter() - t) * 1000.0
            cap.release(slot)
            now = time.perf_counter()
            times.append(now - t_prev)
            t_prev = now
            fps = len(times) / sum(times) if sum(times) > 0 else 0.0
            n += 1
            lat_sum += latency
            top = clf.top_k(scores, top_k) if show else None
            if reporter is not None:  # top-k, JSON and serving off this thread
                reporter.hold(n, frame, scores, latency, fps, top)
                if cap.q.empty():  # this thread waits for the next frame: report now
                    reporter.flush()
            if show:
                cv2.imshow("edgeeff", overlay(frame, top, latency, fps))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
        if reporter is not None:
            reporter.close()  # every line written before the summary; its error raised here
        t_end = time.perf_counter()  # the threads' shutdown below is not frame time
    finally:
        if reporter is not None:
            reporter.stop()
        if keeper is not None:
            keeper.close()  # the frames it accepted are written before the summary
        cap.stop_event.set()
        # let the capture thread leave its read before the source is released under it
        # (releasing a VideoCapture mid-read can abort the process)
        cap.join(timeout=2.0)
        src.close()
        cv2.setNumThreads(cv_threads)
        if show:
            cv2.destroyAllWindows()
    wall = t_end - t_start
    skipped = src.skipped + cap.skipped
    summary = {"frames": n, "fps": round(n / wall, 2) if wall > 0 else 0.0,
               "mean_latency_ms": round(lat_sum / n, 3) if n else None,
               "dropped_frames": cap.dropped, "skipped_frames": skipped,
               "reconnects": src.reconnects, "runtime": clf.runtime}
    if keeper is not None:
        summary.update(kept_unsure=keeper.kept, unsure_dropped=keeper.dropped)
    print(f"edgeeff demo: {n} frames, {summary['fps']} FPS end to end, mean inference "
          f"{summary['mean_latency_ms']} ms, {cap.dropped} stale frames dropped, "
          f"{skipped} undecodable skipped"
          + (f", {summary['reconnects']} reconnects" if reconnect and src.live else "")
          + (f", {keeper.kept} unsure frames kept in {keep.folder}" if keeper is not None else ""),
          file=err)
    return summary

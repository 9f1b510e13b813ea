"""``edgeeff collect DIR``: take and label photos for a dataset from a browser, on the board.

``store`` (the folder: class names checked, photos written atomically, undo by id, the
frames ``demo --keep-unsure`` kept), ``feed`` (the camera thread), ``server`` (the page and
its API on :mod:`edgeeff.device.web`'s guarded server). Needs OpenCV and no model: only
``[runtime]``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from edgeeff.device.collect import feed, server, store
from edgeeff.device.collect.feed import Feed
from edgeeff.device.collect.server import CollectServer
from edgeeff.device.collect.store import BadClassName, CollectError, Store, check_class_name
from edgeeff.device.demo.sources import DemoError

__all__ = ["BadClassName", "CollectError", "CollectServer", "Feed", "Session", "Store",
           "check_class_name", "feed", "open_session", "server", "store"]


@dataclass(frozen=True)
class Session:
    """What a finished ``collect`` did, for its last line."""

    photos: int
    labelled: int
    classes: int


def open_session(folder, source: str, host: str, port: int, token: str | None = None,
                 allow_hosts=()) -> CollectServer:
    """The folder checked, the source opened and the port bound (bad input fails here, with
    nothing served); :func:`serve_until_stopped` runs it."""
    st = Store(folder)
    fd = Feed(source)
    try:
        return CollectServer(st, fd, host, port, token=token, allow_hosts=allow_hosts)
    except BaseException:
        fd.src.close()
        raise


def serve_until_stopped(app: CollectServer, poll_s: float = 0.2) -> Session:
    """Serve until Ctrl-C / SIGTERM (raised through) or the camera stops (:class:`DemoError`,
    after a clean shutdown)."""
    try:
        app.feed.start()  # inside the try: an interrupt while it starts still closes it
        app.start()
        while app.feed.error is None:
            time.sleep(poll_s)
        raise DemoError(f"{app.feed.name_shown} stopped: {app.feed.error}")
    finally:
        # also when the interrupt lands inside start(): every thread that calls OpenCV is
        # stopped and joined before the interpreter exits (a daemon thread still inside
        # OpenCV at exit is unwound through its C++ and aborts the process)
        app.close()
        app.feed.close()
        shots = list(app.store.shots.values())
        done = Session(sum(s.kind == "capture" for s in shots),
                       sum(s.kind == "label" for s in shots), len(app.store.classes()))
        print(f"edgeeff collect: {done.photos} photos taken and {done.labelled} kept frames "
              f"labelled this session (undone ones not counted); {done.classes} classes in "
              f"{app.store.root}", file=sys.stderr)

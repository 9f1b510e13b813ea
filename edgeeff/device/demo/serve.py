"""``edgeeff demo --serve``: the live picture and the predictions, to browsers on the network.

A headless board (a Pi without a monitor) has no window to show; this serves, beside the
inference loop, with the standard library's threaded HTTP server:

- ``/``: one page with the live picture (top-k labels, scores, FPS and latency drawn on it)
  and the top-k list updating live;
- ``/stream.mjpg``: the picture as multipart MJPEG (what ``<img>`` and VLC play);
- ``/predictions``: the latest result as JSON;
- ``/events``: Server-Sent Events, one JSON object per classified frame.

Serving never stalls inference. :meth:`DemoServer.publish`, the only call the inference loop
makes, stores a reference to the result and appends its JSON line to each event client's
bounded queue (a ``deque`` with ``maxlen``: a slow client loses its oldest events). JPEG
encoding runs in the server's own thread, at most ``stream_fps`` times a second and only while
someone watches the stream, into each stream client's bounded queue. Every client has its own
thread with a socket timeout, so a client that vanishes (reset, broken pipe) or stops reading
ends its thread and releases its queue.

The guards every request passes first (Host against DNS rebinding, the token and its
per-port cookie, the connection cap, the request-head deadline and size) and the guard
headers on every response are :mod:`edgeeff.device.web`'s, shared with ``edgeeff collect``.
The page names the source by its base name, never an absolute path.

Why the standard library and not a server package: on a 32-bit Pi the candidates from Debian or
piwheels are waitress and cheroot, WSGI servers with a fixed pool of worker threads (four and
ten by default), each serving one response to its end: every MJPEG or SSE viewer holds one for
as long as it watches, so with waitress two browser tabs (a picture and an event stream each)
leave nothing for a third or for ``/predictions``, and a pool large enough is our thread per
client again under a WSGI layer. aiohttp streams cheaply on one event loop, but means
rewriting the server around asyncio, with compiled dependencies (multidict, yarl, frozenlist)
on the device, and the version Debian 12 ships reads cookies with ``http.cookies`` too. None of
them checks ``Host``, so that guard and the lenient cookie split are ours in any case; the
connection cap and the head deadline are a few dozen lines over ``http.server``, tested one by
one in ``tests/test_serve_guards.py``.
"""

from __future__ import annotations

import html
import json
import re
import time
from http import HTTPStatus

from edgeeff.device import web
from edgeeff.device.web import (  # noqa: F401 - the names demo --serve has always had
    BOUNDARY,
    CLIENT_QUEUE,
    CLIENT_TIMEOUT_S,
    COOKIE,
    HEADER_TIMEOUT_S,
    JPEG_QUALITY,
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    SERVE_NICE,
    STREAM_FPS,
    TOKEN_ENV,
    ServeError,
    background_thread,
    cookie_values,
    exposure_warning,
    host_of,
    is_loopback,
    machine_names,
    normalize_host,
    parse_address,
    resolve_token,
    valid_token,
)

EVENT_QUEUE = 64  # events queued per client
POLL_S = 0.02  # how often a client thread looks for new events
OVERLAY_BGR = (0, 255, 0)  # the colour of the labels drawn on the picture
STATS_BGR = (0, 200, 255)


_PATH_TAIL = re.compile(r"(\bsource [\w-]+:)(.*[\\/].*)$")


def public_info(info: str) -> str:
    """The info line as the page shows it: the source (the line's last field, ``kind:path``)
    by its base name, so that viewers do not learn the machine's directory layout."""
    m = _PATH_TAIL.search(info)
    if not m:
        return info
    base = re.split(r"[\\/]", m.group(2).rstrip("\\/"))[-1]
    return info[:m.start()] + m.group(1) + base


def overlay(frame, top, latency_ms: float, fps: float):
    """Draw the top-k labels and scores, FPS and latency on ``frame`` (BGR, in place)."""
    import cv2

    y = 24
    for t in top:
        cv2.putText(frame, f"{t['label'][:28]} {t['score']:.2f}", (8, y),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, OVERLAY_BGR, 2)
        y += 24
    cv2.putText(frame, f"{fps:.1f} FPS  {latency_ms:.1f} ms", (8, y + 4),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, STATS_BGR, 2)
    return frame


class DemoServer(web.GuardedServer):
    """The demo's HTTP server and its JPEG encoder; bound on construction, served after
    :meth:`start`.

    Use as a context manager: leaving it stops the threads and releases the port.
    """

    command = "demo"

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 stream_fps: float = STREAM_FPS, allow_hosts=()):
        self.handler = _Handler
        self.info = ""  # one line about the model and the source (the page shows public_info)
        self.latest = None  # (seq, frame, payload, json line) of the newest result
        self._seq = 0
        # this module's limits, read now (tests lower them here)
        super().__init__(host, port, token, stream_fps, allow_hosts,
                         max_connections=MAX_CONNECTIONS, header_timeout_s=HEADER_TIMEOUT_S)

    # ----------------------------------------------------------------- inference side

    def publish(self, frame, payload: dict, line: str | None = None) -> None:
        """Hand one result over (called by the inference loop: stores and queues, no more).

        ``frame`` is the BGR picture it was computed on (not modified, not copied here);
        ``payload`` the JSON-able result; ``line`` its JSON text when the caller has it.
        """
        line = line if line is not None else json.dumps(payload)
        self._seq += 1
        self.latest = (self._seq, frame, payload, line)
        for q in self._event_clients:
            q.append(line)

    def picture(self):
        """The newest classified frame with its labels, scores, FPS and latency drawn on it."""
        rec = self.latest
        if rec is None:
            return None
        seq, frame, payload, _ = rec
        return seq, overlay(frame.copy(), payload.get("top", ()), payload.get("latency_ms", 0.0),
                            payload.get("fps", 0.0))


class _Handler(web.GuardedHandler):
    def route(self, demo: DemoServer, path: str, query: dict, cookie: str | None) -> None:
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8",
                       _page(public_info(demo.info)).encode(), cookie)
        elif path == "/predictions":
            rec = demo.latest
            if rec is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "application/json",
                           b'{"error": "no frame classified yet"}', cookie)
            else:
                self._send(HTTPStatus.OK, "application/json", rec[3].encode(), cookie)
        elif path == "/stream.mjpg":
            self.stream(demo, cookie)
        elif path == "/events":
            self._events(demo, cookie)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 Not Found\n")

    def _events(self, demo: DemoServer, cookie: str | None) -> None:
        self._start_stream("text/event-stream", cookie)
        if self.command == "HEAD":
            return
        q = demo._add("events", EVENT_QUEUE)
        try:
            self.wfile.write(b"retry: 1000\n\n")
            if demo.latest is not None:
                q.append(demo.latest[3])
            idle = 0
            while not demo.stopping.is_set():
                if not q:
                    time.sleep(POLL_S)
                    idle += 1
                    if idle % 25 == 0 and self._peer_gone():  # no events to write for a while
                        return
                    continue
                idle = 0
                lines = []
                while q:
                    lines.append(q.popleft())
                self.wfile.write("".join(f"data: {x}\n\n" for x in lines).encode())
                self.wfile.flush()
        finally:
            demo._remove(q)


def _page(info: str) -> str:
    return _PAGE.replace("{info}", html.escape(info))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeeff demo</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1rem; background: #111; color: #eee; }
 #live { max-width: 100%; border: 1px solid #444; display: block; }
 #top { font-size: 1.2rem; } #top li { margin: .2rem 0; }
 #stats, #info { color: #aaa; }
</style></head>
<body>
<h1>edgeeff demo</h1>
<p id="info">{info}</p>
<img id="live" src="stream.mjpg" alt="live picture with the predictions drawn on it">
<ol id="top"></ol>
<p id="stats">waiting for the first frame…</p>
<script>
"use strict";
let latest = null, shown = -1;
const events = new EventSource("events");
events.onmessage = (e) => { latest = JSON.parse(e.data); };
function draw() {
  if (latest === null || latest.frame === shown) return;
  shown = latest.frame;
  const items = latest.top.map((t) => {
    const li = document.createElement("li");
    li.textContent = `${t.label} ${t.score.toFixed(3)}`;
    return li;
  });
  document.getElementById("top").replaceChildren(...items);
  document.getElementById("stats").textContent =
    `frame ${latest.frame} · ${latest.fps.toFixed(1)} FPS · ${latest.latency_ms.toFixed(1)} ms`;
}
setInterval(draw, 100);
</script>
</body></html>
"""

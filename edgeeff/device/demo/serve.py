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

With ``token`` every path needs it, as the ``token`` query parameter or the ``edgeeff_token``
cookie (set by the page when it was opened with the query parameter): 401 otherwise, and
nothing streamed.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import os
import re
import select
import socket
import sys
import threading
import time
from collections import deque
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from edgeeff.core.errors import EdgeeffError

STREAM_FPS = 15.0  # JPEG frames per second sent to stream viewers, at most
JPEG_QUALITY = 80
CLIENT_QUEUE = 2  # stream frames queued per client (older ones are dropped)
EVENT_QUEUE = 64  # events queued per client
POLL_S = 0.02  # how often a client thread looks for new events
CLIENT_TIMEOUT_S = 10.0  # a client that accepts nothing for this long is dropped
COOKIE = "edgeeff_token"
BOUNDARY = "edgeeff-frame"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
OVERLAY_BGR = (0, 255, 0)  # the colour of the labels drawn on the picture
STATS_BGR = (0, 200, 255)
SERVE_NICE = 10  # the server's threads yield the CPU to inference and capture (Linux)


def background_thread() -> bool:
    """Lower the calling thread's scheduling priority by ``SERVE_NICE``, so that when the cores
    are busy, JPEG encoding and HTTP writes wait rather than the inference loop. Idle cores
    still run them at full speed. Linux schedules threads one by one (a thread is a task with its
    own nice value); elsewhere this does nothing and returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + SERVE_NICE)
        return True
    except (OSError, AttributeError):  # a sandbox that forbids it: serve at normal priority
        return False


class ServeError(EdgeeffError):
    """The server could not start (address in use, bad host); ``address`` is what was asked."""

    def __init__(self, address: str, reason: str):
        self.address, self.reason = address, reason
        super().__init__(f"cannot serve on {address}: {reason}")


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (``8000``, ``0.0.0.0:8000``, ``[::1]:8000``) to (host, port); the host
    defaults to 127.0.0.1. ``ValueError`` with the reason for anything else."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected [HOST:]PORT with a port 0-65535, got {text!r}")
    return host, int(port)


def valid_token(token: str) -> bool:
    """A token that needs no escaping in a URL or a cookie: letters, digits and ``._~-``."""
    return bool(_TOKEN_CHARS.fullmatch(token))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int, token: str | None) -> str | None:
    """The one line to print when the picture is visible beyond this machine, else None."""
    if is_loopback(host):
        return None
    guard = "only with the token" if token else "no --token set"
    return (f"edgeeff: warning: serving on {host}:{port}: anyone on the network can watch "
            f"the camera ({guard})")


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


class DemoServer:
    """The HTTP server and its JPEG encoder; bound on construction, served after :meth:`start`.

    Use as a context manager: leaving it stops the threads and releases the port.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 stream_fps: float = STREAM_FPS):
        self.token = token or None
        self.stream_fps = stream_fps
        self.info = ""  # one line about the model and the source, shown on the page
        self.latest = None  # (seq, frame, payload, json line) of the newest result
        self.jpeg: tuple[int, bytes] | None = None  # (seq, bytes) of the newest encoded frame
        self.stopping = threading.Event()
        self._seq = 0
        self._lock = threading.Lock()
        self._event_clients: tuple[deque, ...] = ()
        self._stream_clients: tuple[deque, ...] = ()
        self._client_threads: set[threading.Thread] = set()
        self._jpeg_ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        try:
            self.httpd = _HTTPServer((host, port), _Handler)
        except OSError as e:
            raise ServeError(f"{host}:{port}", e.strerror or str(e)) from None
        self.httpd.demo = self
        self.host, self.port = host, self.httpd.server_address[1]

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> DemoServer:
        """Serve (in its own threads); a second call does nothing."""
        if self._threads:
            return self
        for target, name in ((self._serve, "edgeeff-serve"), (self._encode, "edgeeff-jpeg")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _serve(self) -> None:
        background_thread()  # the client threads it starts inherit the lower priority
        self.httpd.serve_forever(poll_interval=0.1)

    def close(self) -> None:
        """Stop streaming, end every client thread, release the port."""
        self.stopping.set()
        with self._jpeg_ready:
            self._jpeg_ready.notify_all()
        if self._threads:
            self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=2.0)
        deadline = time.monotonic() + 2.0
        for t in list(self._client_threads):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def clients(self) -> int:
        """Client connections being served now (page loads, streams, event streams)."""
        return len(self._client_threads)

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

    # ----------------------------------------------------------------- encoder thread

    def _encode(self) -> None:
        import cv2

        background_thread()
        interval = 1.0 / self.stream_fps
        done = 0
        while not self.stopping.wait(interval):
            rec = self.latest
            if rec is None or rec[0] == done or not self._stream_clients:
                continue
            seq, frame, payload, _ = rec
            img = overlay(frame.copy(), payload.get("top", ()), payload.get("latency_ms", 0.0),
                          payload.get("fps", 0.0))
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                continue
            data = buf.tobytes()
            done = seq
            with self._jpeg_ready:
                self.jpeg = (seq, data)
                for q in self._stream_clients:
                    q.append(data)
                self._jpeg_ready.notify_all()

    # ----------------------------------------------------------------- client registry

    def _add(self, kind: str, maxlen: int) -> deque:
        q: deque = deque(maxlen=maxlen)
        with self._lock:
            if kind == "events":
                self._event_clients = (*self._event_clients, q)
            else:
                self._stream_clients = (*self._stream_clients, q)
        return q

    def _remove(self, q: deque) -> None:
        with self._lock:
            self._event_clients = tuple(c for c in self._event_clients if c is not q)
            self._stream_clients = tuple(c for c in self._stream_clients if c is not q)
        q.clear()

    def authorized(self, query: dict, cookie_header: str | None) -> tuple[bool, bool]:
        """(allowed, the token came in the query) for one request."""
        if self.token is None:
            return True, False
        given = (query.get("token") or [None])[0]
        if given is not None:
            return hmac.compare_digest(given.encode(), self.token.encode()), True
        if cookie_header:
            try:
                c = SimpleCookie(cookie_header)
            except CookieError:
                return False, False
            if COOKIE in c:
                return hmac.compare_digest(c[COOKIE].value.encode(), self.token.encode()), False
        return False, False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    demo: DemoServer

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away mid-request is not an error worth a traceback


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = CLIENT_TIMEOUT_S  # socket timeout: a client that stops reading is dropped
    server_version = "edgeeff"

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the demo's stderr is for the demo

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        demo = self.server.demo
        me = threading.current_thread()
        demo._client_threads.add(me)
        try:
            self._route(demo)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.close_connection = True
        finally:
            demo._client_threads.discard(me)

    def _route(self, demo: DemoServer) -> None:
        url = urlsplit(self.path)
        ok, in_query = demo.authorized(parse_qs(url.query), self.headers.get("Cookie"))
        if not ok:
            self._send(HTTPStatus.UNAUTHORIZED, "text/plain; charset=utf-8",
                       b"401 Unauthorized: open the URL with ?token=... as printed by "
                       b"edgeeff demo\n")
            return
        cookie = (f"{COOKIE}={demo.token}; Path=/; HttpOnly; SameSite=Strict"
                  if in_query else None)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", _page(demo.info).encode(),
                       cookie)
        elif url.path == "/predictions":
            rec = demo.latest
            if rec is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "application/json",
                           b'{"error": "no frame classified yet"}', cookie)
            else:
                self._send(HTTPStatus.OK, "application/json", rec[3].encode(), cookie)
        elif url.path == "/stream.mjpg":
            self._stream(demo, cookie)
        elif url.path == "/events":
            self._events(demo, cookie)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 Not Found\n")

    def _send(self, status, ctype: str, body: bytes, cookie: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(body)

    def _start_stream(self, ctype: str, cookie: str | None) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.close_connection = True

    def _stream(self, demo: DemoServer, cookie: str | None) -> None:
        self._start_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}", cookie)
        q = demo._add("stream", CLIENT_QUEUE)
        try:
            if demo.jpeg is not None:
                q.append(demo.jpeg[1])  # the newest picture at once, not after the next one
            while not demo.stopping.is_set():
                if not q:
                    with demo._jpeg_ready:
                        demo._jpeg_ready.wait(0.5)
                    if not q and self._peer_gone():  # no frames to write: look for EOF
                        return
                    continue
                data = q.popleft()
                self.wfile.write(b"--" + BOUNDARY.encode() + b"\r\nContent-Type: image/jpeg"
                                 b"\r\nContent-Length: " + str(len(data)).encode() +
                                 b"\r\n\r\n" + data + b"\r\n")
                self.wfile.flush()
        finally:
            demo._remove(q)

    def _peer_gone(self) -> bool:
        """The client closed its end (seen without writing: while no frames come, a writer
        would not notice, and its thread would wait for the next frame)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _events(self, demo: DemoServer, cookie: str | None) -> None:
        self._start_stream("text/event-stream", cookie)
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

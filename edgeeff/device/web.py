"""The guarded HTTP server that ``demo --serve`` and ``collect`` share: what a request must pass
before either answers, the MJPEG stream of the live picture, and the helpers around them.

What a request must pass, in this order, before it is routed:

- **Host** (DNS rebinding): a web page whose name an attacker rebinds to 127.0.0.1 reaches this
  server with its own name in ``Host``. Accepted are only the loopback names (``localhost``,
  127.0.0.0/8, ``[::1]``), the address and name given to ``--serve``, and, when the user shares
  the view (a non-loopback address such as ``0.0.0.0`` or ``[::]``), the machine's own host
  name, ``HOST.local`` (mDNS), and the address the client connected to; plus every
  ``allow_hosts`` name (``--allow-host NAME``). Anything else: 403 and nothing more; no
  ``Host``, or more than one: 400.
- **Token**: with ``token`` every path needs it, as the ``token`` query parameter or the
  ``edgeeff_token_PORT`` cookie (set by the page when it was opened with the query parameter;
  one name per port, so two servers on one machine keep their own cookies): 401 otherwise. The
  ``Cookie`` header is split by hand, leniently: a neighbour that ``http.cookies`` cannot parse
  (``prefs={"a":1}``, ``x=a b``) does not hide ours.
- **Connections**: at most ``max_connections`` (32) at once, streams included; one more is
  answered 503 from the accepting thread, without a thread of its own, and closed.
- **Request head**: the request line and headers must arrive within ``header_timeout_s``
  (10 s) of the moment the server starts waiting for them (a client that trickles a byte at a
  time is dropped, not only one silent for ``CLIENT_TIMEOUT_S``), in at most
  ``MAX_REQUEST_BYTES`` (32 KiB; 431 beyond, 414 for the request line) and at most 100 header
  lines (``http.client``'s own cap). A request body (``collect``'s POSTs) must arrive within the
  same deadline. A stream, once answered, is not cut by it.

Every response, errors included, carries ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY``, ``Content-Security-Policy: frame-ancestors 'none'`` and
``Referrer-Policy: no-referrer`` (the page's URL holds the token). ``HEAD`` is answered like
``GET`` without a body. IPv6 works: ``[::1]:8000`` binds ::1, ``[::]:8000`` every address of
both families.

:class:`GuardedServer` binds on construction and serves after :meth:`~GuardedServer.start`;
a subclass names its handler (a :class:`GuardedHandler` with a ``route``) and what the live
picture is (:meth:`~GuardedServer.picture`), which its JPEG thread encodes at most
``stream_fps`` times a second, only while someone watches, into each viewer's bounded queue.

Why the standard library and not a server package: see :mod:`edgeeff.device.demo.serve`.
"""

from __future__ import annotations

import hmac
import http.client
import io
import ipaddress
import os
import re
import select
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from edgeeff.core.errors import EdgeeffError

STREAM_FPS = 15.0  # JPEG frames per second sent to stream viewers, at most
JPEG_QUALITY = 80
CLIENT_QUEUE = 2  # stream frames queued per client (older ones are dropped)
CLIENT_TIMEOUT_S = 10.0  # a client that accepts nothing for this long is dropped
MAX_CONNECTIONS = 32  # connections served at once (page loads, streams, event streams)
HEADER_TIMEOUT_S = 10.0  # the request line and headers must arrive within this, in all
MAX_REQUEST_BYTES = 32 * 1024  # request line and headers together, at most
COOKIE = "edgeeff_token"  # the cookie's name is COOKIE_PORT: one per served port
TOKEN_ENV = "EDGEEFF_TOKEN"  # the token, when neither --token nor --token-file gives it
BOUNDARY = "edgeeff-frame"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
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


def _ip(text: str):
    """``text`` as an address (IPv4-mapped IPv6 unwrapped to IPv4), or None for a name."""
    try:
        a = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    return a.ipv4_mapped or a if a.version == 6 else a


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    a = _ip(host)
    return a is not None and a.is_loopback


_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def normalize_host(name: str) -> str:
    """A host name or address as ``Host`` is compared: lower case, no trailing dot, no
    brackets; ``ValueError`` for anything that is neither a DNS name nor an address."""
    text = name.strip().lower()
    a = _ip(text)
    if a is not None:
        return str(a)
    text = text[:-1] if text.endswith(".") else text  # "localhost." is "localhost"
    if not _HOST_NAME.fullmatch(text) or len(text) > 253:
        raise ValueError(f"expected a host name or an address, got {name!r}")
    return text


def host_of(header: str) -> str | None:
    """The host part of a ``Host`` header (``name[:port]``, ``[v6][:port]``), normalized;
    None when it is not one."""
    text = header.strip()
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        a = _ip(inner)
        return str(a) if a is not None else None
    name, sep, port = text.partition(":")
    if sep and not port.isdigit():
        return None
    try:
        return normalize_host(name)
    except ValueError:
        return None


def machine_names() -> set[str]:
    """This machine's own names, as a browser on the network would reach it: the host name
    and its mDNS ``.local`` name (how a Raspberry Pi is usually found)."""
    try:
        name = normalize_host(socket.gethostname())
    except (OSError, ValueError):
        return set()
    return {name, f"{name.split('.', 1)[0]}.local"}


def cookie_values(header: str, name: str) -> list[str]:
    """Every value ``name`` has in a ``Cookie`` header, split by hand on ``;`` and the first
    ``=``: pieces that are not ``name=value`` (``prefs={"a":1}``, ``x=a b``) are skipped, where
    ``http.cookies`` gives up on the whole header at the first of them."""
    out = []
    for piece in header.split(";"):
        key, sep, value = piece.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out.append(value)
    return out


def resolve_token(token: str | None, token_file: str | None,
                  environ: dict | None = None) -> str | None:
    """The server's token from ``--token``, else ``--token-file`` (its text, stripped), else
    ``$EDGEEFF_TOKEN`` (unset or empty: no token). The file and the variable keep it out of
    ``ps``. ``ValueError`` with the one-line reason for two sources, an unreadable or empty
    file, or a token with characters a URL or a cookie would need escaped."""
    environ = os.environ if environ is None else environ
    if token is not None and token_file is not None:
        raise ValueError("give --token or --token-file, not both")
    where = "--token"
    if token_file is not None:
        where = "--token-file"
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read(4096).strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or type(e).__name__
            raise ValueError(f"cannot read --token-file {token_file}: {reason}") from None
        if not token:
            raise ValueError(f"--token-file {token_file} is empty")
    elif token is None:
        where, token = f"${TOKEN_ENV}", environ.get(TOKEN_ENV) or None
    if token is not None and not valid_token(token):
        raise ValueError(f"{where} takes letters, digits and . _ ~ - (it goes into URLs and "
                         "a cookie)")
    return token


def exposure_warning(host: str, port: int, token: str | None,
                     what: str = "watch the camera") -> str | None:
    """The one line to print when the server is reachable beyond this machine, else None;
    ``what`` says what anyone on the network can then do."""
    if is_loopback(host):
        return None
    guard = "only with the token" if token else "no --token set"
    host = f"[{host}]" if ":" in host else host
    return f"edgeeff: warning: serving on {host}:{port}: anyone on the network can {what} ({guard})"




class GuardedServer:
    """An HTTP server with the guards above and an MJPEG picture; bound on construction,
    served after :meth:`start`. Use as a context manager: leaving it stops the threads and
    releases the port.

    A subclass sets ``handler`` (its :class:`GuardedHandler`), ``command`` (the ``edgeeff``
    command that runs it, for the messages) and :meth:`picture`.
    """

    handler: type[BaseHTTPRequestHandler]
    command = "serve"

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 stream_fps: float = STREAM_FPS, allow_hosts=(),
                 max_connections: int = MAX_CONNECTIONS,
                 header_timeout_s: float = HEADER_TIMEOUT_S):
        self.token = token or None
        self.stream_fps = stream_fps
        self.jpeg: tuple[int, bytes] | None = None  # (seq, bytes) of the newest encoded frame
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._event_clients: tuple[deque, ...] = ()
        self._stream_clients: tuple[deque, ...] = ()
        self._client_threads: set[threading.Thread] = set()
        self._jpeg_ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.max_request_bytes = MAX_REQUEST_BYTES
        v6 = ":" in host
        shown = f"[{host}]:{port}" if v6 else f"{host}:{port}"
        try:
            self.httpd = (_HTTPServer6 if v6 else _HTTPServer)((host, port), self.handler)
        except OSError as e:
            raise ServeError(shown, e.strerror or str(e)) from None
        self.httpd.app = self
        self.host, self.port = host, self.httpd.server_address[1]
        self.cookie = f"{COOKIE}_{self.port}"
        self.shared = not is_loopback(host)
        names = {normalize_host(h) for h in allow_hosts}
        for h in (host, self.httpd.server_address[0]):
            try:
                names.add(normalize_host(h))
            except ValueError:
                pass
        if self.shared:
            names |= machine_names()
        self.allowed_hosts = frozenset(names)

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self):
        """Serve (in its own threads); a second call does nothing."""
        if self._threads:
            return self
        for target, name in ((self._serve, f"edgeeff-{self.command}"),
                             (self._encode, "edgeeff-jpeg")):
            t = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(t)  # listed first: close() sees it even if interrupted here
            t.start()
        return self

    def _serve(self) -> None:
        background_thread()  # the client threads it starts inherit the lower priority
        self.httpd.serve_forever(poll_interval=0.1)

    def close(self) -> None:
        """Stop streaming, end every client thread, release the port."""
        self.stopping.set()
        with self._jpeg_ready:
            self._jpeg_ready.notify_all()
        if self._threads and self._threads[0].is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2.0)
        deadline = time.monotonic() + 2.0
        for t in list(self._client_threads):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def clients(self) -> int:
        """Client connections being served now (page loads, streams, event streams)."""
        return len(self._client_threads)

    # ----------------------------------------------------------------- the picture

    def picture(self):
        """(seq, BGR image) of the newest picture to stream, or None; a seq already encoded
        is not encoded again."""
        return None

    def _encode(self) -> None:
        import cv2

        background_thread()
        interval = 1.0 / self.stream_fps
        done = 0
        while not self.stopping.wait(interval):
            if not self._stream_clients:
                continue
            rec = self.picture()
            if rec is None or rec[0] == done:
                continue
            seq, img = rec
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

    # ----------------------------------------------------------------- the guards

    def host_allowed(self, host_header: str, local_address: str) -> bool:
        """Whether a request that names ``host_header`` and reached ``local_address`` (this
        end of its connection) may be served: see the module's docstring (DNS rebinding)."""
        host = host_of(host_header)
        if host is None:
            return False
        if host in self.allowed_hosts or is_loopback(host):
            return True
        here = _ip(local_address)
        return self.shared and here is not None and _ip(host) == here

    def authorized(self, query: dict, cookie_header: str | None) -> tuple[bool, bool]:
        """(allowed, the token came in the query) for one request."""
        if self.token is None:
            return True, False
        given = (query.get("token") or [None])[0]
        if given is not None:
            return hmac.compare_digest(given.encode(), self.token.encode()), True
        ok = False
        for value in cookie_values(cookie_header or "", self.cookie):
            ok |= hmac.compare_digest(value.encode(), self.token.encode())
        return ok, False


_GUARD_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
)
_BUSY = ("HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
         "Connection: close\r\nRetry-After: 5\r\n"
         + "".join(f"{k}: {v}\r\n" for k, v in _GUARD_HEADERS)
         + "\r\n503 Service Unavailable: too many connections\n").encode()


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most ``app.max_connections`` of them at once."""

    daemon_threads = True
    allow_reuse_address = True
    app: GuardedServer

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and _ip(self.server_address[0]) == \
                ipaddress.ip_address("::"):
            try:  # [::] serves IPv4 as well, as 0.0.0.0 would (Linux's default, made sure)
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except (OSError, AttributeError):
                pass
        # TCPServer's bind, without HTTPServer's getfqdn(): a reverse lookup nobody reads,
        # which can wait seconds for DNS on a board with no network
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def __init__(self, *args, **kwargs):
        self.active = 0
        self._active_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self._active_lock:
            full = self.active >= self.app.max_connections
            if not full:
                self.active += 1
        if full:  # answered here, in the accepting thread, without blocking it
            try:
                request.setblocking(False)
                request.send(_BUSY)
                request.recv(self.app.max_request_bytes)  # what was sent: no reset on close
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._active_lock:
            self.active -= 1

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away mid-request is not an error worth a traceback


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _HeadReader(io.RawIOBase):
    """The socket's reading side, with the request-head deadline: every read waits at most
    until ``handler.deadline``, then raises ``TimeoutError`` (which drops the connection)."""

    def __init__(self, sock, handler):
        self.sock, self.handler = sock, handler

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self.handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request head not received in time")
        self.sock.settimeout(min(CLIENT_TIMEOUT_S, left))
        return self.sock.recv_into(b)


class _HeadBuffer(io.BufferedReader):
    """Reads the request line and headers within ``budget`` bytes in all: beyond it,
    ``LineTooLong``, which ``http.server`` answers 431 (414 for the request line)."""

    budget = 0

    def readline(self, size=-1) -> bytes:
        cap = self.budget + 1 if size is None or size < 0 else min(size, self.budget + 1)
        line = super().readline(cap) if cap > 0 else b""
        self.budget -= len(line)
        if self.budget < 0:
            raise http.client.LineTooLong("request head")
        return line


class GuardedHandler(BaseHTTPRequestHandler):
    """Checks ``Host`` and the token before :meth:`route` sees a request; answers with the
    guard headers; streams the server's MJPEG picture (:meth:`stream`)."""

    server: _HTTPServer
    timeout = CLIENT_TIMEOUT_S  # socket timeout: a client that stops reading is dropped
    server_version = "edgeeff"
    deadline = 0.0

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain reader holds the socket open: replaced, not leaked
        self.rfile = _HeadBuffer(_HeadReader(self.connection, self))

    def handle_one_request(self) -> None:
        app = self.server.app
        self.deadline = time.monotonic() + app.header_timeout_s
        self.rfile.budget = app.max_request_bytes
        try:
            super().handle_one_request()
        except http.client.LineTooLong:  # the request line alone is over the budget
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            self.close_connection = True

    def version_string(self) -> str:
        return self.server_version  # the Server header names no Python version

    def end_headers(self) -> None:
        for k, v in _GUARD_HEADERS:
            self.send_header(k, v)
        super().end_headers()

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the command's stderr is for the command

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._guarded()

    do_HEAD = do_GET  # noqa: N815 - the same answer, without a body (see _send, _start_stream)

    def _guarded(self) -> None:
        """Host, then the token, then :meth:`route`; a vanished client ends the request."""
        app = self.server.app
        self.connection.settimeout(self.timeout)  # the head is in: back to the write timeout
        me = threading.current_thread()
        app._client_threads.add(me)
        try:
            self._check_and_route(app)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.close_connection = True
        finally:
            app._client_threads.discard(me)

    def _check_and_route(self, app: GuardedServer) -> None:
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            self._send(HTTPStatus.BAD_REQUEST, "text/plain; charset=utf-8",
                       b"400 Bad Request: one Host header is required\n")
            return
        if not app.host_allowed(hosts[0], self.connection.getsockname()[0]):
            self._send(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8",
                       b"403 Forbidden: this Host is not a name of this server; to share it "
                       b"under a name, run edgeeff " + app.command.encode() +
                       b" with --allow-host NAME\n")
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        ok, in_query = app.authorized(query, "; ".join(self.headers.get_all("Cookie") or []))
        if not ok:
            self._send(HTTPStatus.UNAUTHORIZED, "text/plain; charset=utf-8",
                       b"401 Unauthorized: open the URL with ?token=... as printed by "
                       b"edgeeff " + app.command.encode() + b"\n")
            return
        cookie = (f"{app.cookie}={app.token}; Path=/; HttpOnly; SameSite=Strict"
                  if in_query else None)
        self.route(app, url.path, query, cookie)

    def route(self, app: GuardedServer, path: str, query: dict, cookie: str | None) -> None:
        """Answer one request that passed the guards; ``cookie`` is the ``Set-Cookie`` value
        to send with it (the token came in the query), or None."""
        self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 Not Found\n")

    def _send(self, status, ctype: str, body: bytes, cookie: str | None = None,
              headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if cookie:
            self.send_header("Set-Cookie", cookie)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
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

    def stream(self, app: GuardedServer, cookie: str | None) -> None:
        """The live picture as multipart MJPEG, until the client goes or the server stops."""
        self._start_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}", cookie)
        if self.command == "HEAD":
            return
        q = app._add("stream", CLIENT_QUEUE)
        try:
            if app.jpeg is not None:
                q.append(app.jpeg[1])  # the newest picture at once, not after the next one
            while not app.stopping.is_set():
                if not q:
                    with app._jpeg_ready:
                        app._jpeg_ready.wait(0.5)
                    if not q and self._peer_gone():  # no frames to write: look for EOF
                        return
                    continue
                data = q.popleft()
                self.wfile.write(b"--" + BOUNDARY.encode() + b"\r\nContent-Type: image/jpeg"
                                 b"\r\nContent-Length: " + str(len(data)).encode() +
                                 b"\r\n\r\n" + data + b"\r\n")
                self.wfile.flush()
        finally:
            app._remove(q)

    def _peer_gone(self) -> bool:
        """The client closed its end (seen without writing: while no frames come, a writer
        would not notice, and its thread would wait for the next frame)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

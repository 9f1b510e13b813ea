"""``collect``'s web page and its API, on :mod:`edgeeff.device.web`'s guarded server.

Reading (``GET``, ``HEAD``): ``/`` the page, ``/stream.mjpg`` the live picture,
``/api/state`` classes and counts, this session's last photos and the kept frames waiting for a
label, ``/api/thumb?id=ID`` a session photo's thumbnail, ``/api/kept.jpg?frame=STEM`` a kept
frame's.

Writing (``POST`` only, a JSON object of at most :data:`MAX_BODY` bytes): ``/api/class`` add,
``/api/class/rename``, ``/api/class/remove``, ``/api/capture`` (``count`` photos, at most
:data:`MAX_BURST`), ``/api/undo`` (by id), ``/api/label`` (a kept frame into a class).

A write must pass, after the server's own guards (Host, the token on every path):

- ``Origin`` present and equal to the origin the request was sent to (``http://`` + its
  checked ``Host``): a page on another site cannot write, whatever cookies its POST carries;
- the header ``X-Edgeeff-CSRF`` equal to this run's secret, which only the page carries (in a
  ``<meta>``); a cookie alone never authorizes a write;
- ``Content-Type: application/json`` (a cross-site form cannot send it without a preflight),
  a ``Content-Length`` (no chunked bodies) of at most :data:`MAX_BODY`, read within the
  request's deadline.

Photos are taken at most :data:`BURST_RATE` a second, whichever clients ask (one pacing lock
for all of them), each from a frame newer than the last photo's; at most :data:`MAX_PENDING`
photos may be waiting (429 beyond). The page's hold-to-burst asks for one photo at a time
while the button is held, at most :data:`MAX_BURST` per hold.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
import threading
import time
from http import HTTPStatus

from edgeeff.data.images import load_bgr
from edgeeff.device import web
from edgeeff.device.collect.feed import Feed
from edgeeff.device.collect.store import (
    MAX_CLASSES,
    MAX_NAME_CHARS,
    CollectError,
    Store,
    check_class_name,
)

MAX_BODY = 4096  # bytes of JSON in a write request
MAX_BURST = 20  # photos in one capture request, and per hold of the burst button
BURST_RATE = 5.0  # photos a second, at most, all clients together
MAX_PENDING = 2 * MAX_BURST  # photos asked for and not yet taken, all clients together
FRAME_TIMEOUT_S = 5.0  # a capture waits this long for a new frame, then 503
CSRF_HEADER = "X-Edgeeff-CSRF"
PHOTO_QUALITY = 95
THUMB_WIDTH = 160


class CollectServer(web.GuardedServer):
    """The page, the picture and the API over a :class:`Store` and a :class:`Feed`."""

    command = "collect"

    def __init__(self, store: Store, feed: Feed, host: str = "127.0.0.1", port: int = 8000,
                 token: str | None = None, allow_hosts=(), stream_fps: float = web.STREAM_FPS):
        self.handler = _Handler
        self.store, self.feed = store, feed
        self.csrf = secrets.token_urlsafe(32)
        self._pace = threading.Lock()
        self._pending_lock = threading.Lock()
        self.pending = 0
        self._next_t = 0.0
        self._last_seq = 0
        super().__init__(host, port, token, stream_fps, allow_hosts)

    def picture(self):
        return self.feed.latest

    # ------------------------------------------------------------------ capture

    def capture(self, cls, count: int) -> list:
        """Take ``count`` photos of class ``cls``, paced; the :class:`Shot` of each."""
        import cv2

        self.store.class_dir(cls)  # 400/404 before waiting for anything
        with self._pending_lock:
            if self.pending + count > MAX_PENDING:
                raise CollectError(f"{self.pending} photos are already waiting",
                                   HTTPStatus.TOO_MANY_REQUESTS)
            self.pending += count
        shots = []
        try:
            with self._pace:
                for _ in range(count):
                    wait = self._next_t - time.monotonic()
                    if wait > 0 and self.stopping.wait(wait):
                        break
                    rec = self.feed.frame_after(self._last_seq, FRAME_TIMEOUT_S)
                    if rec is None:
                        raise CollectError(
                            f"no new frame from {self.feed.name_shown}"
                            + (f": {self.feed.error}" if self.feed.error else ""),
                            HTTPStatus.SERVICE_UNAVAILABLE)
                    seq, frame = rec
                    ok, buf = cv2.imencode(".jpg", frame,
                                           [cv2.IMWRITE_JPEG_QUALITY, PHOTO_QUALITY])
                    if not ok:
                        raise CollectError("cannot encode the frame as JPEG",
                                           HTTPStatus.INTERNAL_SERVER_ERROR)
                    shots.append(self.store.save(cls, buf.tobytes(), _thumb(frame)))
                    self._last_seq = seq
                    self._next_t = time.monotonic() + 1.0 / BURST_RATE
        finally:
            with self._pending_lock:
                self.pending -= count
        return shots

    def state(self) -> dict:
        total, kept = self.store.kept()
        return {
            "classes": [{"name": n, "count": c} for n, c in self.store.classes()],
            "recent": [_shot(s) for s in self.store.recent_shots()],
            "kept": {"total": total,
                     "frames": [{"frame": k.stem,
                                 "guess": [{"label": lab, "score": sc} for lab, sc in k.guess]}
                                for k in kept]},
            "limits": {"max_classes": MAX_CLASSES, "max_name": MAX_NAME_CHARS,
                       "max_burst": MAX_BURST, "burst_rate": BURST_RATE},
            "source": web_name(self.feed.name_shown),
        }


def web_name(name: str) -> str:
    """A source as the page names it: ``kind:`` and the base name (no directory layout)."""
    kind, sep, rest = name.partition(":")
    if not sep:
        return name
    return f"{kind}:{rest.rstrip('/').replace(chr(92), '/').rsplit('/', 1)[-1]}"


def _shot(s) -> dict:
    return {"id": s.id, "class": s.cls, "name": s.name, "kind": s.kind}


def _thumb(frame) -> bytes | None:
    import cv2

    h, w = frame.shape[:2]
    if w > THUMB_WIDTH:
        frame = cv2.resize(frame, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else None


def _thumb_of_file(path) -> bytes | None:
    img = load_bgr(path)
    return None if img is None else _thumb(img)


class _Handler(web.GuardedHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self._guarded()

    def _json(self, status, obj, cookie: str | None = None) -> None:
        self._send(status, "application/json", (json.dumps(obj) + "\n").encode(), cookie)

    def _refuse(self, status, reason: str) -> None:
        self.close_connection = True  # a refused body may be unread: not one more request
        self._json(status, {"error": reason})

    def route(self, app: CollectServer, path: str, query: dict, cookie: str | None) -> None:
        try:
            if self.command == "POST":
                self._write(app, path)
            else:
                self._read(app, path, query, cookie)
        except CollectError as e:
            self._json(e.status, {"error": e.reason})

    # ------------------------------------------------------------------ reading

    def _read(self, app: CollectServer, path: str, query: dict, cookie: str | None) -> None:
        if path in ("/", "/index.html"):
            nonce = secrets.token_urlsafe(16)
            csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                   "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'")
            self._send(HTTPStatus.OK, "text/html; charset=utf-8",
                       _page(app.csrf, nonce, web_name(app.feed.name_shown)).encode(), cookie,
                       headers=[("Content-Security-Policy", csp)])
        elif path == "/stream.mjpg":
            self.stream(app, cookie)
        elif path == "/api/state":
            self._json(HTTPStatus.OK, app.state(), cookie)
        elif path == "/api/thumb":
            shot_id = (query.get("id") or [None])[0]
            with app.store.lock:
                p = app.store.path_of(shot_id)
                thumb = app.store.shots[shot_id].thumb
            thumb = thumb or _thumb_of_file(p)
            self._image(thumb)
        elif path == "/api/kept.jpg":
            self._image(_thumb_of_file(app.store.kept_frame((query.get("frame") or [None])[0])))
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 Not Found\n")

    def _image(self, data: bytes | None) -> None:
        if data is None:
            raise CollectError("cannot read that picture", HTTPStatus.NOT_FOUND)
        self._send(HTTPStatus.OK, "image/jpeg", data)

    # ------------------------------------------------------------------ writing

    def _write(self, app: CollectServer, path: str) -> None:
        host = self.headers["Host"]
        origin = self.headers.get_all("Origin") or []
        if len(origin) != 1 or origin[0].strip().lower() != f"http://{host.strip().lower()}":
            self._refuse(HTTPStatus.FORBIDDEN, "a write must come from this server's own page "
                                               "(Origin)")
            return
        given = self.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), app.csrf.encode()):
            self._refuse(HTTPStatus.FORBIDDEN, f"a write needs the page's {CSRF_HEADER} header")
            return
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self._refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "expected application/json")
            return
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None or not length.isdigit():
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "expected a Content-Length")
            return
        if int(length) > MAX_BODY:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_BODY} bytes")
            return
        raw = self.rfile.read(int(length))  # within the request's deadline (web._HeadReader)
        self.connection.settimeout(self.timeout)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise CollectError("expected a JSON object")
        st = app.store
        if path == "/api/class":
            self._json(HTTPStatus.CREATED, {"name": st.add_class(body.get("name"))})
        elif path == "/api/class/rename":
            self._json(HTTPStatus.OK, {"name": st.rename_class(body.get("name"), body.get("to"))})
        elif path == "/api/class/remove":
            st.remove_class(body.get("name"))
            self._json(HTTPStatus.OK, {"removed": check_class_name(body.get("name"))})
        elif path == "/api/capture":
            count = body.get("count", 1)
            if type(count) is not int or not 1 <= count <= MAX_BURST:
                raise CollectError(f"count: expected 1 to {MAX_BURST}")
            shots = app.capture(body.get("class"), count)
            self._json(HTTPStatus.CREATED, {"photos": [_shot(s) for s in shots]})
        elif path == "/api/undo":
            self._json(HTTPStatus.OK, {"undone": _shot(st.undo(body.get("id")))})
        elif path == "/api/label":
            self._json(HTTPStatus.CREATED, {"photo": _shot(st.label(body.get("frame"),
                                                                    body.get("class")))})
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 Not Found\n")


def _page(csrf: str, nonce: str, source: str) -> str:
    return (_PAGE.replace("{csrf}", html.escape(csrf)).replace("{nonce}", nonce)
            .replace("{source}", html.escape(source)).replace("{max_burst}", str(MAX_BURST)))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="edgeeff-csrf" content="{csrf}">
<title>edgeeff collect</title>
<style nonce="{nonce}">
 body { font-family: system-ui, sans-serif; margin: 1rem; background: #111; color: #eee; }
 #live { max-width: 100%; border: 1px solid #444; display: block; }
 button { margin: .15rem; } .current { background: #2a6; color: #fff; }
 #classes li { margin: .25rem 0; } #recent, #kept { display: flex; flex-wrap: wrap; gap: .5rem;
 list-style: none; padding: 0; } #recent li, #kept li { background: #222; padding: .3rem; }
 #recent img, #kept img { display: block; max-width: 160px; } #status { color: #fa6; }
 .muted { color: #aaa; }
</style></head>
<body>
<h1>edgeeff collect</h1>
<p class="muted">source {source}</p>
<img id="live" src="stream.mjpg" alt="live picture">
<p><button id="capture">capture</button>
<button id="burst">hold to burst (at most {max_burst})</button>
<span id="current" class="muted">no class chosen</span></p>
<p id="status" role="status"></p>
<h2>classes</h2>
<ul id="classes"></ul>
<p><input id="new-class" maxlength="64" placeholder="new class name">
<button id="add">add class</button></p>
<h2>last photos</h2>
<ul id="recent"></ul>
<h2>kept frames to label <span id="kept-total" class="muted"></span></h2>
<ul id="kept"></ul>
<script nonce="{nonce}">
"use strict";
const csrf = document.querySelector('meta[name="edgeeff-csrf"]').content;
let state = null, current = null;
window.bursting = false;
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...kids) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...kids);
  return e;
};
function status(text) { $("status").textContent = text; }
async function post(path, body) {
  const r = await fetch(path, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-Edgeeff-CSRF": csrf},
    body: JSON.stringify(body)});
  const data = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) { status(`${r.status}: ${data.error}`); throw new Error(data.error); }
  status("");
  return data;
}
function norm(s) { return s.toLowerCase().replace(/[ -]/g, "_"); }
function choose(name) { current = name; draw(); }
function draw() {
  if (state === null) return;
  const names = state.classes.map((c) => c.name);
  if (current !== null && !names.includes(current)) current = null;
  $("current").textContent = current === null ? "no class chosen" : `class: ${current}`;
  $("classes").replaceChildren(...state.classes.map((c) => {
    const pick = el("button", {className: "pick" + (c.name === current ? " current" : ""),
                              textContent: c.name, onclick: () => choose(c.name)});
    pick.dataset.name = c.name;
    const count = el("span", {className: "count", textContent: ` ${c.count} `});
    const ren = el("button", {className: "rename", textContent: "rename", onclick: () => {
      const input = el("input", {value: c.name, maxLength: 64});
      const ok = el("button", {textContent: "ok", onclick: async () => {
        const r = await post("api/class/rename", {name: c.name, to: input.value});
        if (current === c.name) current = r.name;
        refresh();
      }});
      li.replaceChildren(input, ok);
    }});
    const rm = el("button", {className: "remove", textContent: "remove", onclick: async () => {
      await post("api/class/remove", {name: c.name}); refresh(); }});
    const li = el("li", {}, pick, count, ren, rm);
    li.dataset.name = c.name;
    li.dataset.count = c.count;
    return li;
  }));
  $("recent").replaceChildren(...state.recent.map((s) => {
    const li = el("li", {}, el("img", {src: `api/thumb?id=${encodeURIComponent(s.id)}`,
                                       alt: s.name}),
      el("span", {textContent: `${s.class}/${s.name}`}),
      el("button", {className: "undo", textContent: "undo", onclick: async () => {
        await post("api/undo", {id: s.id}); refresh(); }}));
    li.dataset.path = `${s.class}/${s.name}`;
    return li;
  }));
  $("kept-total").textContent = `(${state.kept.total})`;
  $("kept").replaceChildren(...state.kept.frames.map((k) => {
    const guess = k.guess.length ? k.guess[0].label : null;
    const sel = el("select", {className: "label-class"}, ...names.map((n) =>
      el("option", {value: n, textContent: n,
                    selected: guess !== null && norm(n) === norm(guess)})));
    const text = k.guess.slice(0, 3).map((g) => `${g.label} ${g.score.toFixed(2)}`).join(", ");
    const li = el("li", {}, el("img", {src: `api/kept.jpg?frame=${encodeURIComponent(k.frame)}`,
                                       alt: k.frame}),
      el("span", {className: "muted", textContent: text || "no guess"}), sel,
      el("button", {className: "label", textContent: "label", onclick: async () => {
        await post("api/label", {frame: k.frame, class: sel.value}); refresh(); }}));
    li.dataset.frame = k.frame;
    return li;
  }));
}
async function refresh() {
  const r = await fetch("api/state", {credentials: "same-origin"});
  if (r.ok) { state = await r.json(); draw(); }
}
async function capture(count) {
  if (current === null) { status("choose a class first"); return 0; }
  const r = await post("api/capture", {class: current, count});
  return r.photos.length;
}
$("add").onclick = async () => {
  const r = await post("api/class", {name: $("new-class").value});
  $("new-class").value = "";
  current = r.name;
  refresh();
};
$("capture").onclick = async () => { await capture(1); refresh(); };
let held = false;
async function burst() {
  if (window.bursting) return;
  window.bursting = true;
  try {
    let n = 0;
    while (held && n < {max_burst}) { n += await capture(1); refresh(); }
  } catch (e) { /* shown in the status line */ }
  finally { window.bursting = false; refresh(); }
}
$("burst").onpointerdown = (e) => { held = true; e.target.setPointerCapture(e.pointerId); burst(); };
for (const ev of ["pointerup", "pointercancel", "lostpointercapture"])
  $("burst").addEventListener(ev, () => { held = false; });
refresh();
setInterval(refresh, 2000);
</script>
</body></html>
"""

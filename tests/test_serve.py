"""``edgeeff demo --serve``: the browser view of the demo, over real HTTP on 127.0.0.1.

The server tests publish synthetic frames straight into a :class:`DemoServer` (no model
needed) and read every path with urllib or a raw socket; the tests with the loop run it on a
synthesized int8 model (random weights, built in milliseconds) with the real runtime; the
end-to-end tests run the real CLI on the sample clip with Lite0, and one drives a real
headless Chromium (Debian's ``chromium``, through Playwright with that executable: no browser
is downloaded). Nothing waits for a time to pass: each wait is for a condition (with a
generous limit, a safety net against a hung test, not a measurement).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core.arch import ModelSpec
from edgeeff.device import synth
from tests.conftest import needs

cv2 = needs("cv2")

from edgeeff.device import demo  # noqa: E402
from edgeeff.device.demo import serve  # noqa: E402

TOKEN = "s3cret"
TINY = ModelSpec(family="lite", width=0.25, depth=0.25, resolution=32, num_classes=10)
CHROMIUM = Path("/usr/bin/chromium")
# top-1 labels Lite0 gives the sample clip's photos (a cat, a coffee, a rocket, Grace Hopper)
SAMPLE_LABELS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "espresso",
                 "cup", "coffee mug", "eggnog", "missile", "projectile", "space shuttle",
                 "military uniform", "suit", "Windsor tie", "bow tie", "mortarboard",
                 "academic gown"}


def write_tiny_model(folder: Path) -> Path:
    """A synthesized int8 model file (random weights): what the loop tests classify with."""
    needs("ai_edge_litert")
    p = folder / "tiny.tflite"
    p.write_bytes(synth.build(TINY))
    return p


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("serve"))


def _classifier(model):
    from edgeeff.device.runtime import Classifier

    return Classifier(model, num_threads=1)


def _wait(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class _Publisher(threading.Thread):
    """The inference loop's side: a frame and a result about every 5 ms."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.stop = server, threading.Event()
        self.frame = np.zeros((120, 160, 3), np.uint8)
        self.frame[:] = (90, 40, 200)  # no pure green: the overlay's colour is recognisable

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            self.server.publish(self.frame, {"frame": n, "top": [
                {"index": n % 7, "label": f"label{n}", "score": 0.5}],
                "latency_ms": 1.0, "fps": 200.0})
            time.sleep(0.005)


@pytest.fixture
def served():
    server = serve.DemoServer("127.0.0.1", 0, token=TOKEN, stream_fps=30).start()
    pub = _Publisher(server)
    pub.start()
    yield server
    pub.stop.set()
    pub.join()
    server.close()


def _url(server, path, token=TOKEN):
    return f"http://127.0.0.1:{server.port}{path}" + (f"?token={token}" if token else "")


def _get(url, headers=None, timeout=5):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                  timeout=timeout)


@pytest.mark.parametrize("path", ["/", "/predictions", "/stream.mjpg", "/events"])
def test_every_path_needs_the_token(served, path):
    for token in (None, "wrong"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(_url(served, path, token))
        assert e.value.code == 401
        body = e.value.read()
        assert b"\xff\xd8" not in body and b"data:" not in body  # nothing streamed
    # the page sets a cookie that later requests (the <img>, the EventSource) carry
    r = _get(_url(served, "/"))
    cookie = r.headers["Set-Cookie"].split(";")[0]
    assert cookie == f"edgeeff_token_{served.port}={TOKEN}" and b"stream.mjpg" in r.read()
    _wait(lambda: served.latest is not None, what="a first frame")
    with _get(_url(served, path, None), headers={"Cookie": cookie}) as r:
        assert r.status == 200
        assert r.read(64)
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(_url(served, path, None), headers={"Cookie": f"edgeeff_token_{served.port}=wrong"})
    assert e.value.code == 401


def test_predictions_is_the_latest_result_as_json(served):
    _wait(lambda: served.latest is not None, what="a first frame")
    a = json.loads(_get(_url(served, "/predictions")).read())
    _wait(lambda: served.latest[2]["frame"] > a["frame"], what="a newer frame")
    b = json.loads(_get(_url(served, "/predictions")).read())
    assert set(a) == {"frame", "top", "latency_ms", "fps"}
    assert b["frame"] > a["frame"] and b["top"][0]["label"] == f"label{b['frame']}"


def _read_part(r):
    """One part of a multipart MJPEG stream: (headers, JPEG bytes)."""
    line = r.readline()
    while line in (b"\r\n", b"\n"):
        line = r.readline()
    assert line.strip() == b"--" + serve.BOUNDARY.encode(), line
    headers = {}
    while (line := r.readline().strip()):
        k, v = line.decode().split(":", 1)
        headers[k.lower()] = v.strip()
    data = r.read(int(headers["content-length"]))
    return headers, data


def test_mjpeg_stream_sends_jpeg_frames_with_the_overlay(served):
    r = _get(_url(served, "/stream.mjpg"))
    assert r.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={serve.BOUNDARY}"
    frames = [_read_part(r) for _ in range(3)]
    r.close()
    for headers, data in frames:
        assert headers["content-type"] == "image/jpeg" and data[:2] == b"\xff\xd8"
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (120, 160, 3)
        b, g, r_ = (img[..., i].astype(int) for i in range(3))
        green = (g > 180) & (r_ < 100) & (b < 100)  # the labels, drawn in pure green
        assert green[:60].sum() > 30 and green[90:].sum() == 0
    assert len({d for _, d in frames}) == 3  # the picture changes: the label text does


def test_events_stream_one_json_object_per_frame():
    with serve.DemoServer("127.0.0.1", 0, token=TOKEN) as server:
        r = _get(_url(server, "/events"))
        assert r.headers["Content-Type"] == "text/event-stream"
        _wait(lambda: len(server._event_clients) == 1, what="the client's queue")
        frame = np.zeros((60, 80, 3), np.uint8)
        for n in range(1, 21):  # fewer than a client's queue holds
            server.publish(frame, {"frame": n, "top": [], "latency_ms": 1.0, "fps": 1.0})
        events = []
        while len(events) < 20:
            line = r.readline().decode()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
        r.close()
    frames = [e["frame"] for e in events]
    assert frames == sorted(frames) and len(set(frames)) == 20
    # a client that keeps up gets every frame (the queue drops only for slow clients)
    assert frames == list(range(1, 21))


def _raw_client(server, path, reset=False, rcvbuf=None):
    s = socket.socket()
    if rcvbuf is not None:  # before connecting: the window it offers stays this small
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", server.port))
    s.sendall(f"GET {path}?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    if reset:  # close with an RST, as a client that crashes or loses its network does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return s


@pytest.mark.parametrize("reset", [False, True])
def test_clients_that_vanish_mid_stream_leave_no_thread(served, reset):
    _wait(lambda: served.latest is not None, what="a first frame")
    before = set(threading.enumerate())
    clients = [_raw_client(served, p, reset) for p in ("/stream.mjpg", "/events")]
    for s in clients:
        assert s.recv(4096).startswith(b"HTTP/1.0 200")
    _wait(lambda: served.clients == 2, what="two clients")
    assert len(set(threading.enumerate()) - before) == 2  # one thread per client
    for s in clients:
        s.close()
    _wait(lambda: served.clients == 0 and set(threading.enumerate()) <= before,
          what="the client threads to end")
    assert not served._stream_clients and not served._event_clients  # queues released


def test_clients_that_vanish_while_no_frames_come_leave_no_thread():
    """A paused source (a camera reconnecting): nothing is written, the close is still seen."""
    with serve.DemoServer("127.0.0.1", 0, token=TOKEN, stream_fps=30) as server:
        server.publish(np.zeros((60, 80, 3), np.uint8), {"frame": 1, "top": [],
                                                         "latency_ms": 1.0, "fps": 1.0})
        clients = [_raw_client(server, p) for p in ("/stream.mjpg", "/events")]
        for c in clients:
            assert c.recv(4096).startswith(b"HTTP/1.0 200")
        _wait(lambda: server.clients == 2, what="two clients")
        for c in clients:
            c.close()
        _wait(lambda: server.clients == 0, timeout=5, what="the idle client threads to end")


def test_a_client_that_does_not_read_never_stalls_publish(monkeypatch):
    """publish only queues: with an event client and a stream client that read nothing, many
    times more results than their sockets can take are all published, and each client's queue
    stays bounded, holding the newest (a publish that wrote to a client would block for good
    once the socket is full, and the publishing thread would never finish)."""
    monkeypatch.setattr(serve._Handler, "timeout", 600)  # the stuck clients stay while we count
    n, label = 3000, "x" * 16384
    with serve.DemoServer("127.0.0.1", 0, token=TOKEN, stream_fps=30) as server:
        stuck = [_raw_client(server, p, rcvbuf=4096) for p in ("/events", "/stream.mjpg")]
        _wait(lambda: len(server._event_clients) == len(server._stream_clients) == 1,
              what="two clients")
        events = server._event_clients[0]
        frame = np.zeros((480, 640, 3), np.uint8)
        lines = [json.dumps({"frame": k, "top": [{"label": label, "score": 0.5}],
                             "latency_ms": 0.0, "fps": 0.0}) for k in (1, n)]
        wmem = Path("/proc/sys/net/ipv4/tcp_wmem")
        if wmem.is_file():  # what the sockets can hold: the sender's most, the reader's window
            held = int(wmem.read_text().split()[2]) + stuck[0].getsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF)
            assert n * len(lines[0]) > 2 * held + serve.EVENT_QUEUE * len(lines[0])
        done = threading.Event()

        def publish_all():
            for k in range(1, n + 1):
                payload = {"frame": k, "top": [{"label": label, "score": 0.5}],
                           "latency_ms": 0.0, "fps": 0.0}
                server.publish(frame, payload)
            done.set()

        threading.Thread(target=publish_all, daemon=True).start()
        assert done.wait(timeout=300)  # a safety net against a hung test, not a measurement
        assert server.latest[0] == n  # every result was handed over
        queues = server._event_clients + server._stream_clients
        assert len(queues) == 2 and all(len(q) <= q.maxlen for q in queues)  # old ones dropped
        # the newest result is queued for the event client, which took at most a socketful
        assert len(events) == serve.EVENT_QUEUE and events[-1] == lines[1]
        for s in stuck:
            s.close()


def _nice(tid: int) -> int:
    """A thread's nice value, from /proc (field 19 of its stat line)."""
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_server_threads_yield_the_cpu_to_inference(served):
    """The encoder, the accept loop and every client thread run SERVE_NICE below the thread
    that publishes (the inference loop), which keeps its priority."""
    _wait(lambda: served.latest is not None, what="a first frame")
    client = _raw_client(served, "/stream.mjpg")
    assert client.recv(4096).startswith(b"HTTP/1.0 200")
    _wait(lambda: served.clients == 1, what="a client")
    mine = _nice(threading.get_native_id())
    server_threads = [t for t in served._threads] + list(served._client_threads)
    assert len(server_threads) == 3
    for t in server_threads:
        assert _nice(t.native_id) == min(19, mine + serve.SERVE_NICE), t.name
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    client.close()


def test_address_parsing_and_the_network_warning():
    assert serve.parse_address("8000") == ("127.0.0.1", 8000)
    assert serve.parse_address("0.0.0.0:8000") == ("0.0.0.0", 8000)
    assert serve.parse_address("[::1]:9") == ("::1", 9)
    for bad in ("", "x", "host:", "1:99999"):
        with pytest.raises(ValueError):
            serve.parse_address(bad)
    assert serve.exposure_warning("127.0.0.1", 8000, None) is None
    assert serve.exposure_warning("localhost", 8000, None) is None
    w = serve.exposure_warning("0.0.0.0", 8000, None)
    assert "anyone on the network can watch the camera" in w and "\n" not in w


def test_a_busy_port_is_one_line_and_exit_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(serve.ServeError, match=f"127.0.0.1:{port}"):
            serve.DemoServer("127.0.0.1", port)


# --------------------------------------------------------------------------- with the loop


def test_a_finite_source_loops_while_serving(tiny_model, tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 40, 3), 60 * i, np.uint8))
    with serve.DemoServer("127.0.0.1", 0) as server:
        s = demo.run_demo(_classifier(tiny_model), str(tmp_path), True, False, 1, 10,
                          out=io.StringIO(), err=io.StringIO(), server=server)
        last = json.loads(_get(f"http://127.0.0.1:{server.port}/predictions").read())
    assert s["frames"] == 10 and last["frame"] == 10  # three images, shown over and over
    # without a server the folder is read once
    s = demo.run_demo(_classifier(tiny_model), str(tmp_path), True, False, 1, 10,
                      out=io.StringIO(), err=io.StringIO())
    assert s["frames"] == 3


def test_cli_serve_on_all_interfaces_prints_one_warning(tiny_model, tmp_path):
    from click.testing import CliRunner

    from edgeeff.cli import main

    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 40, 3), 60, np.uint8))
    args = ["demo", "--model", str(tiny_model), "--source", str(tmp_path), "--max-frames", "3"]
    r = CliRunner().invoke(main, [*args, "--serve", "0.0.0.0:0", "--token", "t"])
    assert r.exit_code == 0, r.output
    warnings = [x for x in r.stderr.splitlines() if "warning" in x]
    assert len(warnings) == 1 and "anyone on the network can watch the camera" in warnings[0]
    assert re.search(r"serving on http://0\.0\.0\.0:\d+/\?token=t", r.stderr)
    r = CliRunner().invoke(main, [*args, "--serve", "0"])
    assert r.exit_code == 0 and "warning" not in r.stderr
    assert re.search(r"serving on http://127\.0\.0\.1:\d+/$", r.stderr, re.M)
    r = CliRunner().invoke(main, [*args, "--token", "t"])
    assert r.exit_code == 2 and "--token applies to --serve" in r.stderr
    r = CliRunner().invoke(main, [*args, "--serve", "0", "--token", "a b;c"])
    assert r.exit_code == 2 and "--token takes letters" in r.stderr


# --------------------------------------------------------------------------- the real CLI


def _start_cli(model, *extra):
    p = subprocess.Popen([sys.executable, "-m", "edgeeff", "demo", "--model", str(model),
                          "--source", "sample", "--threads", "1", "--serve", "127.0.0.1:0",
                          *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stderr:
        lines.append(line)
        m = re.search(r"serving on (http://127\.0\.0\.1:(\d+)/\S*)", line)
        if m:
            return p, m.group(1), int(m.group(2))
    p.wait(timeout=30)
    raise AssertionError("".join(lines))


def _port_free(port):
    """A new demo can serve on the port at once (no listener left; the closed connections'
    TIME_WAIT does not block a server, which sets SO_REUSEADDR as every server does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # raises if the demo still listened on it
        s.listen()
    return True


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_ends_the_served_demo_and_frees_the_port(lite0_export, sig, code):
    p, url, port = _start_cli(lite0_export)
    try:
        _wait(lambda: _ok(f"http://127.0.0.1:{port}/predictions"), timeout=60,
              what="the first prediction")
        stream = _get(f"http://127.0.0.1:{port}/stream.mjpg")  # a viewer is connected
        assert _read_part(stream)[1][:2] == b"\xff\xd8"
        p.send_signal(sig)
        assert p.wait(timeout=30) == code
        assert "interrupted" in p.stderr.read()
        assert stream.read() is not None  # the server closed the stream: read() returns
        stream.close()
    finally:
        if p.poll() is None:
            p.kill()
    assert _port_free(port)


def _ok(url):
    try:
        return _get(url, timeout=2).status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_browser_shows_live_labels_and_the_overlay(lite0_export, tmp_path):
    """A real headless Chromium opens the page: sample-clip labels, a list that changes, the
    overlay drawn on the picture, and 401 for a wrong token."""
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium: apt-get install chromium (CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    p, url, port = _start_cli(lite0_export, "--token", TOKEN)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            try:
                page = browser.new_page(viewport={"width": 800, "height": 900})
                assert page.goto(url).status == 200
                page.wait_for_selector("#top li", timeout=60_000)
                texts = [tuple(page.locator("#top li").all_inner_texts())]
                for _ in range(30):  # the list follows the frames: wait for it to change
                    if len(set(texts)) > 3:
                        break
                    page.wait_for_function(
                        "(prev) => Array.from(document.querySelectorAll('#top li'),"
                        " (li) => li.textContent).join('\\n') !== prev",
                        arg="\n".join(texts[-1]), timeout=60_000)
                    texts.append(tuple(page.locator("#top li").all_inner_texts()))
                seen = {re.sub(r" [0-9.]+$", "", t) for items in texts for t in items}
                assert seen & SAMPLE_LABELS, seen
                assert len(set(texts)) > 3, texts  # the list follows the frames
                assert "FPS" in page.inner_text("#stats")
                page.wait_for_function(
                    "document.getElementById('live').naturalWidth > 0", timeout=30_000)
                shot = page.locator("#live").screenshot()
                img = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
                b, g, r = (img[..., i].astype(int) for i in range(3))
                green = (g > 180) & (r < 100) & (b < 100)  # the labels drawn on the picture
                h = img.shape[0]
                assert green[:h // 3].sum() > 100, green.sum()
                # a wrong token, or none, gets 401 in the browser too
                other = browser.new_context().new_page()
                assert other.goto(f"http://127.0.0.1:{port}/?token=wrong").status == 401
                assert other.goto(f"http://127.0.0.1:{port}/stream.mjpg").status == 401
            finally:
                browser.close()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            assert p.wait(timeout=30) == 143
        finally:
            if p.poll() is None:
                p.kill()
    assert _port_free(port)


def test_python_dash_m_edgeeff_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "edgeeff", "demo", "--help"], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "COLUMNS": "100"})
    assert r.returncode == 0 and "--serve" in r.stdout and "Usage: edgeeff demo" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgeeff", "demo", "--model", "x", "--serve",
                        "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "[HOST:]PORT" in r.stderr

"""``demo --serve``'s guards (issue 34): what a request must pass before it is served.

Real sockets on 127.0.0.1 and ::1, raw HTTP so that every header is the test's own choice
(urllib would add or fix some). Each test fails on the server before these guards: the Host
check (DNS rebinding), the per-port cookie and the lenient ``Cookie`` split, IPv6, the
connection cap and the request-head deadline and size, HEAD, the security headers, the page's
source name, and the token from a file or ``$EDGEEFF_TOKEN``.
"""

from __future__ import annotations

import io
import json
import re
import select
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs

cv2 = needs("cv2")

from edgeeff.device import demo  # noqa: E402
from edgeeff.device.demo import serve  # noqa: E402
from tests.test_serve import _classifier, _Publisher, _read_part, _wait, write_tiny_model  # noqa: E402

TOKEN = "s3cret"
GUARDS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
          "content-security-policy": "frame-ancestors 'none'"}


def _publish(server, n=1):
    server.publish(np.zeros((60, 80, 3), np.uint8), {"frame": n, "top": [], "latency_ms": 1.0,
                                                     "fps": 1.0})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("guards"))


@pytest.fixture
def server():
    with serve.DemoServer("127.0.0.1", 0) as s:
        _publish(s)
        yield s


def _connect(port, addr="127.0.0.1"):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family)
    s.settimeout(10)  # a safety net against a hung test, not a measurement
    s.connect((addr, port))
    return s


def _head(s) -> tuple[int, dict, bytes]:
    """Read one response head: (status, lower-cased headers, the bytes after the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        assert len(data) < 1 << 20
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/"), data[:200]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, rest


def _rest(s, got=b"") -> bytes:
    """Everything until the server closes the connection."""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk
        assert len(got) < 1 << 20


def _ask(port, path="/predictions", host=None, method="GET", extra="", addr="127.0.0.1"):
    """One request; (status, headers, body) with the body read to the end, except a 200
    stream's (its head only)."""
    host = f"127.0.0.1:{port}" if host is None else host
    lines = f"{method} {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "") + extra
    with _connect(port, addr) as s:
        s.sendall((lines + "\r\n").encode())
        status, headers, rest = _head(s)
        streaming = status == 200 and method == "GET" and path.split("?")[0] in (
            "/stream.mjpg", "/events")
        return status, headers, rest if streaming else _rest(s, rest)


# --------------------------------------------------------------------------- 1. Host


@pytest.mark.parametrize("path", ["/", "/predictions", "/stream.mjpg", "/events"])
def test_a_rebound_name_gets_403_and_nothing_else(server, path):
    """DNS rebinding: a page at rebind.attacker.example whose name now resolves to 127.0.0.1
    reaches the server with its own name in Host."""
    port = server.port
    for host in (f"rebind.attacker.example:{port}", "rebind.attacker.example",
                 f"localhost.attacker.example:{port}", f"127.0.0.1.nip.io:{port}",
                 f"[::2]:{port}", f"10.0.0.1:{port}"):
        status, headers, body = _ask(port, path, host)
        assert status == 403, host
        assert b"frame" not in body and b"\xff\xd8" not in body and b"<img" not in body
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST.",
                 f"127.0.0.2:{port}", f"[::1]:{port}"):
        assert _ask(port, path, host)[0] == 200, host
    # no Host at all, or two (which one would count?): 400
    assert _ask(port, path, host="")[0] == 400
    assert _ask(port, path, extra="Host: rebind.attacker.example\r\n")[0] == 400


def test_a_shared_server_answers_its_own_names_and_allow_host():
    with serve.DemoServer("0.0.0.0", 0, allow_hosts=("Pi.Example.",)) as s:
        _publish(s)
        me = socket.gethostname()
        for host in ("pi.example", f"PI.EXAMPLE:{s.port}", me, f"{me.split('.')[0]}.local",
                     f"127.0.0.1:{s.port}", f"0.0.0.0:{s.port}"):
            assert _ask(s.port, host=host)[0] == 200, host
        assert _ask(s.port, host=f"rebind.attacker.example:{s.port}")[0] == 403
        # the address the client reached is this machine's: accepted when shared
        assert s.host_allowed("192.168.1.5:8000", "192.168.1.5")
        assert s.host_allowed("192.168.1.5", "::ffff:192.168.1.5")
        assert not s.host_allowed("192.168.1.6", "192.168.1.5")
    with serve.DemoServer("127.0.0.1", 0) as s:  # not shared: its LAN names are not its own
        assert not s.host_allowed("192.168.1.5", "192.168.1.5")
        assert not s.host_allowed(socket.gethostname(), "127.0.0.1")


def test_host_header_parsing():
    assert serve.host_of("Example.COM.:80") == "example.com"
    assert serve.host_of("[::1]:8000") == "::1" and serve.host_of("[::ffff:127.0.0.1]") == \
        "127.0.0.1"
    for bad in ("a b", "x:y", "[::1", "[::1]x", "::1", "", "a/b", "[nope]:80"):
        assert serve.host_of(bad) is None, bad
    with pytest.raises(ValueError):
        serve.normalize_host("evil.example/x")


# --------------------------------------------------------------------------- 5. cookies


def _page_cookie(port, token):
    status, headers, _ = _ask(port, f"/?token={token}")
    assert status == 200
    return headers["set-cookie"].split(";")[0]


def test_two_demos_on_two_ports_keep_their_own_cookies():
    """A browser that opened both pages sends both cookies to both ports (cookies do not
    isolate ports): each server must find its own."""
    with serve.DemoServer("127.0.0.1", 0, token="tokenA") as a, \
            serve.DemoServer("127.0.0.1", 0, token="tokenB") as b:
        _publish(a), _publish(b)
        ca, cb = _page_cookie(a.port, "tokenA"), _page_cookie(b.port, "tokenB")
        assert ca.split("=")[0] != cb.split("=")[0]
        for jar in (f"{ca}; {cb}", f"{cb}; {ca}"):
            for s in (a, b):
                assert _ask(s.port, extra=f"Cookie: {jar}\r\n")[0] == 200, (s.port, jar)


def test_an_unparsable_neighbour_cookie_does_not_hide_the_token():
    with serve.DemoServer("127.0.0.1", 0, token=TOKEN, stream_fps=30) as s:
        _publish(s)
        mine = _page_cookie(s.port, TOKEN)
        for jar in (f'prefs={{"a":1}}; {mine}', f"x=a b; {mine}; theme=dark",
                    f'{mine}; prefs={{"a":1}}', f"junk; ;=; {mine}"):
            for path in ("/predictions", "/stream.mjpg", "/events"):
                assert _ask(s.port, path, extra=f"Cookie: {jar}\r\n")[0] == 200, (jar, path)
        wrong = mine.split("=")[0] + "=nope"
        assert _ask(s.port, extra=f'Cookie: prefs={{"a":1}}; {wrong}\r\n')[0] == 401
    assert serve.cookie_values('a=1; b="q"; x=a b; b=2', "b") == ["q", "2"]


# --------------------------------------------------------------------------- 6. IPv6


def _ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) here")


@needs_ipv6
def test_ipv6_loopback_is_served():
    with serve.DemoServer("::1", 0) as s:
        _publish(s)
        assert s.url == f"http://[::1]:{s.port}/" and not s.shared
        status, _, body = _ask(s.port, host=f"[::1]:{s.port}", addr="::1")
        assert status == 200 and json.loads(body)["frame"] == 1
        assert _ask(s.port, host=f"rebind.attacker.example:{s.port}", addr="::1")[0] == 403


@needs_ipv6
def test_all_ipv6_addresses_serve_ipv4_too():
    with serve.DemoServer("::", 0) as s:
        _publish(s)
        assert s.shared
        assert _ask(s.port, host=f"[::1]:{s.port}", addr="::1")[0] == 200
        assert _ask(s.port, host=f"127.0.0.1:{s.port}", addr="127.0.0.1")[0] == 200


@needs_ipv6
def test_cli_serves_on_ipv6(tiny_model, tmp_path):
    from click.testing import CliRunner

    from edgeeff.cli import main

    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 40, 3), 60, np.uint8))
    r = CliRunner().invoke(main, ["demo", "--model", str(tiny_model), "--source", str(tmp_path),
                                  "--max-frames", "3", "--serve", "[::1]:0"])
    assert r.exit_code == 0, r.output
    assert re.search(r"serving on http://\[::1\]:\d+/$", r.stderr, re.M), r.stderr


# --------------------------------------------------------------------------- 7. bounds


def test_connections_beyond_the_cap_get_503_and_streams_keep_flowing(monkeypatch):
    monkeypatch.setattr(serve, "MAX_CONNECTIONS", 2, raising=False)
    with serve.DemoServer("127.0.0.1", 0, stream_fps=30) as s:
        pub = _Publisher(s)
        pub.start()
        try:
            viewers = []
            for _ in range(2):
                v = _connect(s.port)
                v.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n"
                          .encode())
                assert _head(v)[0] == 200
                viewers.append(v.makefile("rb"))
            extra = _connect(s.port)  # one more: refused at once, before it sends anything
            status, headers, body = _head(extra)
            body = _rest(extra, body)
            extra.close()
            assert status == 503 and b"too many connections" in body
            assert all(headers[k] == v for k, v in GUARDS.items())
            for v in viewers:  # the two viewers still get frames
                for _ in range(3):
                    assert _read_part(v)[1][:2] == b"\xff\xd8"
            viewers.pop().close()
            _wait(lambda: _ask(s.port)[0] == 200, what="the freed connection to be served")
            assert _read_part(viewers[0])[1][:2] == b"\xff\xd8"
            viewers[0].close()
        finally:
            pub.stop.set()
            pub.join()


def test_a_trickling_client_is_dropped(monkeypatch):
    """One header byte every 20 ms: never silent long enough for the socket timeout, so
    only the deadline on the whole request head ends it."""
    monkeypatch.setattr(serve, "HEADER_TIMEOUT_S", 0.5, raising=False)
    with serve.DemoServer("127.0.0.1", 0) as s:
        c = _connect(s.port)
        c.sendall(f"GET /predictions HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\nX-Slow: "
                  .encode())
        dropped = False
        for _ in range(1000):  # 20 s at most, forty times the deadline
            try:
                c.sendall(b"a")
                if select.select([c], [], [], 0.02)[0]:
                    dropped = c.recv(4096) == b""
                    break
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
        c.close()
        assert dropped  # closed with nothing answered: no 200 and no JSON
        _wait(lambda: s.httpd.active == 0, what="its connection to be released")


def test_a_stream_outlives_the_header_deadline(monkeypatch):
    """The deadline is on the request head only: a viewer keeps its stream."""
    monkeypatch.setattr(serve, "HEADER_TIMEOUT_S", 0.2, raising=False)
    with serve.DemoServer("127.0.0.1", 0, stream_fps=30) as s:
        pub = _Publisher(s)
        pub.start()
        try:
            v = _connect(s.port)
            v.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode())
            assert _head(v)[0] == 200
            r = v.makefile("rb")
            start, frames = time.monotonic(), 0
            while time.monotonic() - start < 5 * 0.2 and frames < 1000:
                assert _read_part(r)[1][:2] == b"\xff\xd8"
                frames += 1
            r.close(), v.close()
        finally:
            pub.stop.set()
            pub.join()


def test_oversized_request_heads_are_refused(server):
    port = server.port
    big = "".join(f"X-Big-{i}: {'a' * 20_000}\r\n" for i in range(3))  # 60 KB in 3 headers
    status, headers, body = _ask(port, extra=big)
    assert status == 431 and b"frame" not in body
    status, _, body = _ask(port, extra=f"X-Long: {'a' * 40_000}\r\n")
    assert status == 431 and b"frame" not in body
    status, _, _ = _ask(port, path="/predictions?" + "a" * 40_000)
    assert status == 414
    many = "".join(f"X-{i}: 1\r\n" for i in range(101))
    assert _ask(port, extra=many)[0] == 431
    assert _ask(port, extra="X-Fine: " + "a" * 4000 + "\r\n")[0] == 200
    assert all(headers[k] == v for k, v in GUARDS.items())


# --------------------------------------------------------------------------- 10. the rest


@pytest.mark.parametrize("path, ctype", [("/", "text/html"), ("/predictions", "application/json"),
                                         ("/stream.mjpg", "multipart/x-mixed-replace"),
                                         ("/events", "text/event-stream")])
def test_head_is_answered_without_a_body(server, path, ctype):
    status, headers, body = _ask(server.port, path, method="HEAD")
    assert status == 200 and headers["content-type"].startswith(ctype) and body == b""
    if path in ("/", "/predictions"):
        assert int(headers["content-length"]) > 0


def test_every_response_carries_the_guard_headers():
    with serve.DemoServer("127.0.0.1", 0, token=TOKEN) as s:
        _publish(s)
        port = s.port
        answers = {
            "page": _ask(port, f"/?token={TOKEN}"),
            "json": _ask(port, f"/predictions?token={TOKEN}"),
            "stream": _ask(port, f"/stream.mjpg?token={TOKEN}"),
            "events": _ask(port, f"/events?token={TOKEN}"),
            "head": _ask(port, f"/?token={TOKEN}", method="HEAD"),
            "401": _ask(port, "/predictions"),
            "404": _ask(port, f"/nope?token={TOKEN}"),
            "403": _ask(port, host="rebind.attacker.example"),
            "400": _ask(port, host=""),
            "501": _ask(port, method="POST"),
            "431": _ask(port, extra=f"X-Long: {'a' * 40_000}\r\n"),
        }
        with _connect(port) as c:  # a malformed request line: http.server's own 400
            c.sendall(b"GET / x HTTP/1.1\r\n\r\n")
            answers["garbage"] = _head(c)
    for what, (status, headers, _) in answers.items():
        for k, v in GUARDS.items():
            assert headers.get(k) == v, (what, status, k)
        assert headers["referrer-policy"] == "no-referrer", what
    assert answers["501"][0] == 501 and answers["garbage"][0] == 400


def test_the_page_shows_the_source_by_its_base_name(tiny_model, tmp_path):
    folder = tmp_path / "private-dir" / "clips"
    folder.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 40, 3), 60 * i, np.uint8))
    with serve.DemoServer("127.0.0.1", 0) as s:
        demo.run_demo(_classifier(tiny_model), str(folder), True, False, 1, 3,
                      out=io.StringIO(), err=io.StringIO(), server=s)
        status, _, page = _ask(s.port, "/")
    assert status == 200
    assert b"source images:clips<" in page and b"private-dir" not in page
    assert str(tmp_path).encode() not in page
    assert serve.public_info("m.tflite on x, source video:/home/me/My Videos/cat.mp4") == \
        "m.tflite on x, source video:cat.mp4"
    assert serve.public_info("source camera:0") == "source camera:0"
    assert serve.public_info(r"source images:C:\Users\me\pics\\") == "source images:pics"


def test_demo_and_collect_declare_their_serving_options_once():
    # one declaration: the same flags, types and help in both commands (collect always serves)
    from edgeeff.cli import collect_cmd
    from edgeeff.cli import demo as demo_cmd

    def served(cmd):
        return {p.opts[0]: (p.name, type(p.type), p.metavar, p.multiple, p.help)
                for p in cmd.params if p.opts[0] in ("--token", "--token-file", "--allow-host")}

    assert served(demo_cmd) == served(collect_cmd) and len(served(demo_cmd)) == 3
    serve_opt = {c: next(p for p in c.params if p.opts[0] == "--serve")
                 for c in (demo_cmd, collect_cmd)}
    assert serve_opt[demo_cmd].default is None and serve_opt[collect_cmd].default == "8000"
    assert all(o.help.endswith("Binds 127.0.0.1 unless HOST is given (0.0.0.0: the whole "
                               "network).") for o in serve_opt.values())


def test_the_token_from_a_file_or_the_environment(tiny_model, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from edgeeff.cli import main

    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 40, 3), 60, np.uint8))
    monkeypatch.delenv("EDGEEFF_TOKEN", raising=False)
    args = ["demo", "--model", str(tiny_model), "--source", str(tmp_path), "--max-frames", "3"]
    tf = tmp_path / "token"
    tf.write_text("fromfile\n")
    run = CliRunner().invoke
    r = run(main, [*args, "--serve", "0", "--token-file", str(tf)])
    assert r.exit_code == 0 and re.search(r"serving on http://\S+/\?token=fromfile$", r.stderr,
                                          re.M), r.stderr
    r = run(main, [*args, "--serve", "0"], env={"EDGEEFF_TOKEN": "fromenv"})
    assert r.exit_code == 0 and "?token=fromenv" in r.stderr, r.stderr
    r = run(main, [*args, "--serve", "0", "--token", "flag"], env={"EDGEEFF_TOKEN": "fromenv"})
    assert r.exit_code == 0 and "?token=flag" in r.stderr  # the flag wins
    r = run(main, [*args, "--headless"], env={"EDGEEFF_TOKEN": "fromenv"})  # not serving: unused
    assert r.exit_code == 0, r.output
    (tmp_path / "empty").write_text(" \n")
    for bad, msg in ((["--serve", "0", "--token-file", str(tmp_path / "none")], "cannot read"),
                     (["--serve", "0", "--token-file", str(tmp_path / "empty")], "is empty"),
                     (["--serve", "0", "--token", "a", "--token-file", str(tf)], "not both"),
                     (["--token-file", str(tf)], "--token-file applies to --serve"),
                     (["--allow-host", "x"], "--allow-host applies to --serve"),
                     (["--serve", "0", "--allow-host", "a b"], "--allow-host: expected")):
        r = run(main, [*args, *bad])
        assert r.exit_code == 2 and msg in r.stderr and "Traceback" not in r.output, bad
    r = run(main, [*args, "--serve", "0"], env={"EDGEEFF_TOKEN": "a b"})
    assert r.exit_code == 2 and "$EDGEEFF_TOKEN takes letters" in r.stderr
    assert serve.resolve_token(None, None, {}) is None
    assert serve.resolve_token(None, None, {"EDGEEFF_TOKEN": ""}) is None


"""``edgeeff collect`` (issue 37, items 1, 4, 5): photos into DIR/<class>/ from a browser.

Real servers on 127.0.0.1 reading the real ``sample`` clip; plain ``http.client`` requests so
that every header (Host, Origin, the CSRF header, the cookie) is the test's own choice; one
test drives a real headless Chromium (Debian's ``chromium`` through Playwright) and one runs
the CLI with TensorFlow and the TFLite runtimes blocked (``[runtime]`` without a model).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs

cv2 = needs("cv2")

from edgeeff.device import collect  # noqa: E402
from edgeeff.device.collect import server as cserver  # noqa: E402
from edgeeff.device.collect import store as cstore  # noqa: E402
from edgeeff.device.demo import keep  # noqa: E402
from tests.test_layers import BLOCKER  # noqa: E402

TOKEN = "s3cret"
CHROMIUM = Path("/usr/bin/chromium")
BAD_NAMES = ["../x", "..", ".", ".hidden", "a/b", "a\\b", "x\x00y", "tab\there", "nl\nx",
             "bell\x07", "zero\u200bwidth", " lead", "trail ", "", "a" * 65, "a..b", "c:d",
             "q?", 7, None, ["a"]]


@pytest.fixture
def app(tmp_path):
    a = collect.open_session(tmp_path / "ds", "sample", "127.0.0.1", 0, token=TOKEN)
    a.feed.start()
    with a:
        yield a
    a.feed.close()


def _request(app, method, path, body=None, token=TOKEN, origin="same", csrf="same",
             host=None, ctype="application/json", raw=None, headers=()):
    """One request; (status, parsed JSON or the raw body)."""
    host = f"127.0.0.1:{app.port}" if host is None else host
    c = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    h = {"Host": host}
    if token:
        h["Cookie"] = f"edgeeff_token_{app.port}={token}"
    if method == "POST":
        if origin:
            h["Origin"] = f"http://{host}" if origin == "same" else origin
        if csrf:
            h[cserver.CSRF_HEADER] = app.csrf if csrf == "same" else csrf
        if ctype:
            h["Content-Type"] = ctype
    h.update(headers)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in h.items():
        c.putheader(k, v)
    if data is not None:
        c.putheader("Content-Length", str(len(data)))
    c.endheaders(data)
    r = c.getresponse()
    out = r.read()
    c.close()
    try:
        return r.status, json.loads(out)
    except ValueError:
        return r.status, out


def _post(app, path, body, **kw):
    return _request(app, "POST", path, body, **kw)


def _files(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones included): relative path -> content hash."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- names


def test_class_names_are_checked():
    for good in ("cat", "t-shirt", "Käse", "two words", "x" * 64, "a.b", "7"):
        assert cstore.check_class_name(good) == good
    for bad in BAD_NAMES:
        with pytest.raises(cstore.BadClassName):
            cstore.check_class_name(bad)


def test_a_bad_class_name_is_400_and_writes_nothing(app, tmp_path):
    assert _post(app, "/api/class", {"name": "cat"})[0] == 201
    before = _files(tmp_path)
    for bad in BAD_NAMES:
        for path, body in (("/api/class", {"name": bad}),
                           ("/api/capture", {"class": bad}),
                           ("/api/class/rename", {"name": "cat", "to": bad}),
                           ("/api/class/rename", {"name": bad, "to": "dog"}),
                           ("/api/class/remove", {"name": bad})):
            status, answer = _post(app, path, body)
            assert status == 400 and "error" in answer, (path, bad, status, answer)
    assert _files(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert [c["name"] for c in _request(app, "GET", "/api/state")[1]["classes"]] == ["cat"]


# --------------------------------------------------------------------------- safety


def test_writes_need_the_token_the_origin_and_the_csrf_header(app, tmp_path):
    assert _post(app, "/api/class", {"name": "cat"})[0] == 201
    before = _files(tmp_path)
    port = app.port
    refused = {
        "no token": (401, dict(token=None)),
        "wrong token": (401, dict(token="nope")),
        "another origin": (403, dict(origin="http://evil.example")),
        "another port": (403, dict(origin=f"http://127.0.0.1:{port + 1}")),
        "https origin": (403, dict(origin=f"https://127.0.0.1:{port}")),
        "null origin": (403, dict(origin="null")),
        "no origin": (403, dict(origin=None)),
        "no csrf header": (403, dict(csrf=None)),
        "wrong csrf header": (403, dict(csrf="x" * 43)),
        "foreign host": (403, dict(host=f"rebind.attacker.example:{port}")),
        "a form post": (415, dict(ctype="application/x-www-form-urlencoded")),
        "plain text": (415, dict(ctype="text/plain")),
    }
    for what, (code, kw) in refused.items():
        for path, body in (("/api/class", {"name": "dog"}), ("/api/capture", {"class": "cat"}),
                           ("/api/class/remove", {"name": "cat"})):
            assert _post(app, path, body, **kw)[0] == code, (what, path)
    # bodies are bounded; a chunked one (no length) is refused
    big = json.dumps({"name": "dog", "pad": "a" * cserver.MAX_BODY}).encode()
    assert _post(app, "/api/class", None, raw=big)[0] == 413
    assert _post(app, "/api/class", None, raw=b"[1, 2]")[0] == 400
    assert _post(app, "/api/class", None, raw=b"{nope")[0] == 400
    assert _post(app, "/api/class", {"name": "dog"},
                 headers={"Transfer-Encoding": "chunked"})[0] == 411
    assert _files(tmp_path) == before
    # reading needs the token too, on every path
    for path in ("/", "/api/state", "/stream.mjpg", "/api/thumb?id=x", "/api/kept.jpg"):
        assert _request(app, "GET", path, token=None)[0] == 401, path
        assert _request(app, "GET", path, host="evil.example")[0] == 403, path
    # the page carries the CSRF secret; the state does not
    status, page = _request(app, "GET", "/")
    assert status == 200 and f'content="{app.csrf}"'.encode() in page
    assert app.csrf not in json.dumps(_request(app, "GET", "/api/state")[1])
    assert _post(app, "/api/class", {"name": "dog"})[0] == 201  # the same request, allowed


def test_counts_are_bounded(app, monkeypatch):
    assert _post(app, "/api/class", {"name": "cat"})[0] == 201
    for count in (0, cserver.MAX_BURST + 1, -1, "3", 2.0, True):
        assert _post(app, "/api/capture", {"class": "cat", "count": count})[0] == 400, count
    monkeypatch.setattr(cstore, "MAX_CLASSES", 3)
    assert _post(app, "/api/class", {"name": "dog"})[0] == 201
    assert _post(app, "/api/class", {"name": "emu"})[0] == 201
    assert _post(app, "/api/class", {"name": "fox"})[0] == 409
    assert _post(app, "/api/class", {"name": "CAT"})[0] == 409  # one folder on macOS / FAT
    app.pending = cserver.MAX_PENDING  # as if other clients had asked for that many
    assert _post(app, "/api/capture", {"class": "cat"})[0] == 429


# --------------------------------------------------------------------------- photos


def test_capture_writes_camera_sized_photos_paced_and_undo_deletes_one(app):
    root = app.store.root
    assert _post(app, "/api/class", {"name": "cat"})[0] == 201
    status, answer = _post(app, "/api/capture", {"class": "cat", "count": 4})
    assert status == 201 and len(answer["photos"]) == 4
    names = sorted(p.name for p in (root / "cat").iterdir())
    assert names == sorted(s["name"] for s in answer["photos"])
    assert all(re.fullmatch(r"\d{8}-\d{6}-\d+\.jpg", n) for n in names)
    imgs = [cv2.imread(str(root / "cat" / n)) for n in names]
    assert all(i.shape == (240, 320, 3) for i in imgs)  # the sample clip's own size
    assert len({i.tobytes() for i in imgs}) == 4  # four different frames
    times = sorted(s.time for s in app.store.shots.values())
    assert all(b - a >= 1 / cserver.BURST_RATE - 0.01 for a, b in zip(times, times[1:]))
    undo = answer["photos"][1]
    assert _post(app, "/api/undo", {"id": undo["id"]})[0] == 200
    assert sorted(p.name for p in (root / "cat").iterdir()) == sorted(set(names) - {undo["name"]})
    assert _post(app, "/api/undo", {"id": undo["id"]})[0] == 404  # once
    for not_an_id in ("../cat/" + names[0], names[0], "cat/" + names[0], 3, None):
        assert _post(app, "/api/undo", {"id": not_an_id})[0] == 404
    status, thumb = _request(app, "GET", f"/api/thumb?id={answer['photos'][0]['id']}")
    assert status == 200 and thumb[:2] == b"\xff\xd8"
    assert len(list((root / "cat").iterdir())) == 3  # no temporary file left behind


def test_rename_keeps_undo_and_remove_takes_only_an_empty_class(app):
    root = app.store.root
    _post(app, "/api/class", {"name": "cat"})
    shot = _post(app, "/api/capture", {"class": "cat"})[1]["photos"][0]
    assert _post(app, "/api/class/rename", {"name": "cat", "to": "kitten"})[1] == {"name": "kitten"}
    assert (root / "kitten" / shot["name"]).is_file() and not (root / "cat").exists()
    assert _post(app, "/api/class/remove", {"name": "kitten"})[0] == 409  # holds a photo
    assert _post(app, "/api/undo", {"id": shot["id"]})[0] == 200
    assert _post(app, "/api/class/remove", {"name": "kitten"})[0] == 200
    assert not (root / "kitten").exists()
    assert _post(app, "/api/capture", {"class": "kitten"})[0] == 404


def test_a_second_collect_picks_up_where_the_first_left(tmp_path):
    folder = tmp_path / "ds"
    first = []
    for session in range(2):
        a = collect.open_session(folder, "sample", "127.0.0.1", 0)
        a.feed.start()
        with a:
            state = _request(a, "GET", "/api/state", token=None)[1]
            if session == 0:
                assert state["classes"] == []
                for name in ("cat", "dog"):
                    assert _post(a, "/api/class", {"name": name}, token=None)[0] == 201
                _post(a, "/api/capture", {"class": "cat", "count": 2}, token=None)
                first = _files(folder)
            else:
                assert state["classes"] == [{"name": "cat", "count": 2},
                                            {"name": "dog", "count": 0}]
                assert state["recent"] == []  # undo reaches this session's photos only
                _post(a, "/api/capture", {"class": "cat", "count": 2}, token=None)
        a.feed.close()
    now = _files(folder)
    assert len(now) == 4 and all(now[k] == v for k, v in first.items())
    # two sessions in the same second number their photos from 1: no clash, nothing replaced
    s1, s2 = cstore.Store(folder), cstore.Store(folder)
    names = [s.save("dog", bytes([i]) * 10, when=0.0).name for i, s in enumerate((s1, s2, s1))]
    assert len(set(names)) == 3
    assert sorted((folder / "dog" / n).read_bytes()[0] for n in names) == [0, 1, 2]


# --------------------------------------------------------------------------- kept frames


def _keep_frames(folder: Path, n: int, guess: str = "Tabby Cat") -> None:
    """Kept frames as demo --keep-unsure writes them (its own Keeper)."""
    k = keep.Keeper(keep.KeepUnsure(folder, below=0.5, gap=1, max_kept=100).prepared())
    k.start()
    for i in range(n):
        frame = np.full((48, 64, 3), 40 * i, np.uint8)
        assert k.offer(i + 1, frame, [{"index": 1, "label": guess, "score": 0.3},
                                      {"index": 2, "label": "dog", "score": 0.2}])
    k.close()
    assert len(keep.kept_files(folder)) == n


def test_kept_frames_are_labelled_by_one_post_and_undone(tmp_path):
    folder = tmp_path / "ds"
    _keep_frames(folder, 2)
    a = collect.open_session(folder, "sample", "127.0.0.1", 0)
    with a:
        for name in ("tabby_cat", "dog"):
            _post(a, "/api/class", {"name": name}, token=None)
        kept = _request(a, "GET", "/api/state", token=None)[1]["kept"]
        assert kept["total"] == 2 and kept["frames"][0]["guess"][0]["label"] == "Tabby Cat"
        stem = kept["frames"][0]["frame"]
        status, thumb = _request(a, "GET", f"/api/kept.jpg?frame={stem}", token=None)
        assert status == 200 and thumb[:2] == b"\xff\xd8"
        before = _files(folder)
        for bad in ("../ds/x", f"{stem}.jpg", "unsure-../../x", "x", stem + "/..", None):
            assert _post(a, "/api/label", {"frame": bad, "class": "dog"}, token=None)[0] == 400
        assert _post(a, "/api/label", {"frame": "unsure-nope", "class": "dog"},
                     token=None)[0] == 404
        assert _post(a, "/api/label", {"frame": stem, "class": "../x"}, token=None)[0] == 400
        assert _files(folder) == before
        status, answer = _post(a, "/api/label", {"frame": stem, "class": "tabby_cat"},
                               token=None)
        assert status == 201
        moved = folder / "tabby_cat" / answer["photo"]["name"]
        assert moved.is_file() and not (folder / f"{stem}.jpg").exists()
        assert not (folder / f"{stem}.json").exists()
        assert hashlib.sha1(moved.read_bytes()).hexdigest() == before[f"{stem}.jpg"]
        assert _request(a, "GET", "/api/state", token=None)[1]["kept"]["total"] == 1
        assert _post(a, "/api/undo", {"id": answer["photo"]["id"]}, token=None)[0] == 200
        assert _files(folder) == before  # the frame and its guess are back, as they were


# --------------------------------------------------------------------------- the CLI


def _start_cli(folder, *extra, blocked="tensorflow,keras,tf_keras,onnx,onnx2tf,onnxruntime,"
                                       "ai_edge_litert,tflite_runtime"):
    """``edgeeff collect`` with TensorFlow and every TFLite runtime blocked: [runtime] with no
    model is all it needs."""
    p = subprocess.Popen([sys.executable, "-c", BLOCKER, blocked, "collect", str(folder),
                          "--source", "sample", *extra], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stderr:
        lines.append(line)
        m = re.search(r"serving on (http://\S+:(\d+)/\S*)", line)
        if m:
            return p, m.group(1), int(m.group(2)), lines
    p.wait(timeout=30)
    raise AssertionError("".join(lines))


def _stop(p, code=143):
    p.send_signal(signal.SIGTERM)
    try:
        assert p.wait(timeout=30) == code
        return p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()


class _Remote:
    """Enough of a CollectServer for _request: the port and the page's CSRF secret."""

    def __init__(self, port, token=None):
        self.port = port
        status, page = _request(self, "GET", "/", token=token, csrf=None)
        assert status == 200
        self.csrf = re.search(rb'name="edgeeff-csrf" content="([^"]+)"', page).group(1).decode()


def test_cli_runs_without_tensorflow_warns_once_when_shared_and_stops_cleanly(tmp_path):
    p, url, port, lines = _start_cli(tmp_path / "ds", "--serve", "0.0.0.0:0", "--token", TOKEN)
    try:
        warnings = [x for x in lines if "warning" in x]
        assert len(warnings) == 1 and "anyone on the network can watch the camera and write" \
            in warnings[0]
        r = _Remote(port, TOKEN)
        assert _post(r, "/api/class", {"name": "cat"})[0] == 201
        assert _post(r, "/api/capture", {"class": "cat", "count": 2})[0] == 201
        assert _post(r, "/api/capture", {"class": "cat"}, token=None)[0] == 401
    finally:
        err = _stop(p)
    assert "2 photos taken" in err and "interrupted" in err
    assert len(list((tmp_path / "ds" / "cat").glob("*.jpg"))) == 2
    p, url, port, lines = _start_cli(tmp_path / "ds", "--serve", "0")
    assert not any("warning" in x for x in lines) and url == f"http://127.0.0.1:{port}/"
    _stop(p)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("x")
    for args, msg in ((["collect", str(tmp_path / "file"), "--source", "sample"],
                       "is not a folder"),
                      (["collect", str(tmp_path / "d"), "--source", str(tmp_path / "no.mp4")],
                       "not found"),
                      (["collect", str(tmp_path / "d"), "--serve", "nope"], "[HOST:]PORT"),
                      (["collect", str(tmp_path / "d"), "--token", "a b"], "--token takes")):
        r = subprocess.run([sys.executable, "-m", "edgeeff", *args], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr


def test_browser_adds_classes_captures_and_undoes(tmp_path):
    """A real headless Chromium: two classes added, photos taken with the button and by
    holding the burst button, one undone; the folder then holds exactly the photos the page
    lists, and a kept frame is labelled with its guess pre-selected."""
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium: apt-get install chromium (CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    folder = tmp_path / "ds"
    _keep_frames(folder, 1, guess="Dog")
    p, url, port, _ = _start_cli(folder, "--serve", "127.0.0.1:0", "--token", TOKEN)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync"])
            try:
                page = browser.new_page(viewport={"width": 900, "height": 1200})
                assert page.goto(url).status == 200
                for name in ("cat", "dog"):
                    page.fill("#new-class", name)
                    page.click("#add")
                    page.wait_for_selector(f'#classes li[data-name="{name}"]')

                def until(expr, timeout=30.0):
                    """Poll ``expr`` with evaluate (CDP, which the page's strict CSP allows;
                    wait_for_function evaluates strings with eval, which it forbids)."""
                    deadline = time.monotonic() + timeout
                    while not page.evaluate(expr):
                        assert time.monotonic() < deadline, f"timed out waiting for {expr}"
                        page.wait_for_timeout(50)

                def count(name):
                    return int(page.get_attribute(f'#classes li[data-name="{name}"]',
                                                  "data-count"))

                page.click('#classes li[data-name="cat"] .pick')
                for i in range(3):
                    page.click("#capture")
                    until(
                        f"document.querySelector('#classes li[data-name=\"cat\"]')"
                        f".dataset.count == {i + 1}")
                page.click('#classes li[data-name="dog"] .pick')
                page.hover("#burst")
                page.mouse.down()  # held until two photos are in
                until(
                    "Number(document.querySelector('#classes li[data-name=\"dog\"]')"
                    ".dataset.count) >= 2")
                page.mouse.up()
                until("window.bursting === false")
                # settled: every photo taken is listed (a burst's last response can land
                # after the button is released on a loaded machine)
                total = ("Number(document.querySelector('#classes li[data-name=\"cat\"]')"
                         ".dataset.count) + Number(document.querySelector('#classes "
                         "li[data-name=\"dog\"]').dataset.count)")
                until(f"document.querySelectorAll('#recent li').length == {total}")
                page.wait_for_timeout(500)
                until(f"document.querySelectorAll('#recent li').length == {total}")
                n_before = len(page.query_selector_all("#recent li"))
                page.click("#recent li .undo")  # the newest photo
                until(
                    f"document.querySelectorAll('#recent li').length == {n_before - 1}")
                until(  # counts refreshed after the undo
                    "Number(document.querySelector('#classes li[data-name=\"cat\"]')"
                    ".dataset.count) + Number(document.querySelector('#classes "
                    f"li[data-name=\"dog\"]').dataset.count) == {n_before - 1}")
                shown = sorted(page.eval_on_selector_all(
                    "#recent li", "els => els.map(e => e.dataset.path)"))
                assert count("cat") == 3 and count("dog") >= 1
                # the kept frame, its guess (Dog) pre-selected: one click labels it
                page.wait_for_selector("#kept li")
                assert page.input_value("#kept li .label-class") == "dog"
                page.click("#kept li .label")
                until("document.querySelectorAll('#kept li').length == 0")
                labelled = page.eval_on_selector_all(
                    "#recent li", "els => els.map(e => e.dataset.path)")[0]
                # a page opened without the token is refused
                other = browser.new_context().new_page()
                assert other.goto(f"http://127.0.0.1:{port}/").status == 401
            finally:
                browser.close()
    finally:
        _stop(p)
    on_disk = sorted(x.relative_to(folder).as_posix() for x in folder.rglob("*") if x.is_file())
    assert on_disk == sorted([*shown, labelled]), (on_disk, shown)
    assert labelled.startswith("dog/") and not list(folder.glob("unsure-*"))

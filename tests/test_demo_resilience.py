"""The demo keeps going: damaged video frames are skipped and counted, a camera that goes away
is reopened with backoff under --reconnect (and ends the run with exit 1 without it).

The model is real: a synthesized int8 EfficientNet-Lite (random weights, built in
milliseconds by :mod:`edgeeff.device.synth`) run by the real runtime. Frames are uniform
grey; the classifier records the mean of every input tensor it is handed (the capture
thread's crop, raw uint8 pixels), so the tests can tell which frames reached the model, and
its top-1, which the JSON line of that frame must carry. Cameras cannot exist here: a
:class:`~edgeeff.device.demo.sources.Source` of the tests' own stands in for one, handed to
``run_demo`` as any user's own source is, and for the CLI a stand-in for OpenCV's capture on
a camera index.
"""

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core.arch import ModelSpec
from edgeeff.core.errors import EdgeeffError
from edgeeff.device import synth
from tests.conftest import needs

cv2 = needs("cv2")
needs("ai_edge_litert")

from edgeeff.device import demo  # noqa: E402
from edgeeff.device.runtime import Classifier  # noqa: E402

TINY = ModelSpec(family="lite", width=0.25, depth=0.25, resolution=32, num_classes=10)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("resilience") / "tiny.tflite"
    p.write_bytes(synth.build(TINY))
    return p


class Watched(Classifier):
    """The real classifier, which also records what it was handed: the input tensor's mean
    brightness (``levels``), its top-1 (``tops``) and OpenCV's thread count at that moment
    (``cv_threads``). ``invoke_s``: a model that takes that much longer per frame."""

    def __init__(self, path, invoke_s=0.0):
        super().__init__(path, num_threads=1)
        assert self.raw_pixel_input  # the input tensor is the crop's pixels
        self.invoke_s = invoke_s
        self.levels, self.tops, self.cv_threads = [], [], []

    def invoke(self, tensor=None):
        scores = super().invoke(tensor)
        self.levels.append(float((self._buf if tensor is None else tensor).mean()))
        self.tops.append(self.top_k(scores, 1))
        self.cv_threads.append(cv2.getNumThreads())
        time.sleep(self.invoke_s)
        return scores


def corrupt_clip(path: Path, n: int = 30, bad=range(9, 14)) -> Path:
    """An MJPG AVI of ``n`` frames of brightness 8*i, whose frames ``bad`` have their JPEG
    bytes overwritten with garbage (the AVI chunk structure is kept)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(n):
        w.write(np.full((120, 160, 3), 8 * i, np.uint8))
    w.release()
    data = bytearray(path.read_bytes())
    movi = data.index(b"movi")
    chunks, pos = [], movi
    while (pos := data.find(b"00dc", pos + 4)) != -1 and len(chunks) < n:
        chunks.append(pos)
    rng = np.random.default_rng(0)
    for k in bad:
        size = int.from_bytes(data[chunks[k] + 4:chunks[k] + 8], "little")
        start = chunks[k] + 8
        data[start:start + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _run(model, source, invoke_s=0.0, **kw):
    """run_demo, headless, on ``source`` (a --source string, or a Source opener); the
    summary, the JSON lines, stderr, and the classifier (what reached the model)."""
    out, err = io.StringIO(), io.StringIO()
    clf = Watched(model, invoke_s)
    summary = demo.run_demo(clf, source, True, False, 1, kw.pop("max_frames", None),
                            out=out, err=err, **kw)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    frames = [x for x in lines if "frame" in x]
    assert [x["top"] for x in frames] == clf.tops  # each line is its frame's result
    return summary, lines, err.getvalue(), clf


def test_damaged_video_frames_are_skipped_and_counted(model, tmp_path):
    clip = corrupt_clip(tmp_path / "bad.avi")
    summary, lines, err, clf = _run(model, str(clip))
    frames = [x for x in lines if "frame" in x]
    assert summary["frames"] == len(frames) == 25 and summary["skipped_frames"] == 5
    # every good frame reached the model, in order, the last ones included (brightness 8 * i)
    expected = [8 * i for i in range(30) if i not in range(9, 14)]
    assert np.allclose(clf.levels, expected, atol=3)
    assert "5 undecodable skipped" in err


def test_unreadable_files_in_an_image_folder_are_skipped_and_counted(model, tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 40, 3), 50 * i, np.uint8))
    (tmp_path / "1b.png").write_bytes(b"\x89PNG broken")
    summary, lines, _, clf = _run(model, str(tmp_path))
    assert summary["frames"] == 3 and summary["skipped_frames"] == 1
    assert np.allclose(clf.levels, [0, 50, 100], atol=1)


class _Camera(demo.Source):
    """A stand-in for a USB camera (none exists on this machine): each instance delivers
    ``frames`` frames of brightness ``level`` and then fails as a camera that was unplugged
    does (VideoSource raises DemoError after its read failures); ``frames=None`` keeps
    delivering, at about 100 FPS, until closed."""

    live = True
    name = "camera:fake"

    def __init__(self, level, frames):
        self.level, self.n, self.closed = level, frames, False

    def frames(self):
        k = 0
        while (self.n is None or k < self.n) and not self.closed:
            if self.n is None:
                time.sleep(0.01)
            k += 1
            yield np.full((48, 64, 3), self.level, np.uint8)
        if self.n is not None:
            raise demo.DemoError("camera:fake stopped delivering frames")

    def close(self):
        self.closed = True


def _script(monkeypatch, steps):
    """A source opener (what run_demo takes besides a --source string) that returns, in
    turn, each step: a _Camera, or an exception to raise; and the list of those opened."""
    opened = []

    def opener():
        step = steps.pop(0)
        if isinstance(step, Exception):
            raise step
        opened.append(step)
        return step

    monkeypatch.setattr(demo.sources, "RECONNECT_DELAYS_S", (0.01, 0.02, 0.04))
    return opener, opened


@pytest.mark.parametrize("invoke_s", [0.0, 0.05])  # a fast and a slow model
def test_camera_that_disconnects_is_reopened_with_backoff(model, monkeypatch, invoke_s):
    opener, opened = _script(monkeypatch, [
        _Camera(40, 3),
        EdgeeffError("cannot open camera 0: check it is connected"),
        EdgeeffError("cannot open camera 0: check it is connected"),
        _Camera(200, None),
    ])
    summary, lines, _, clf = _run(model, opener, invoke_s, reconnect=True, max_frames=8)
    events = [x for x in lines if x.get("event") == "reconnect"]
    assert [(e["attempt"], e["ok"]) for e in events] == [(1, False), (2, False), (3, True)]
    assert [e["delay_s"] for e in events] == [0.01, 0.02, 0.04]  # backing off
    assert "stopped delivering" in events[0]["reason"] and "cannot open" in events[0]["error"]
    levels = [round(x) for x in clf.levels]
    old = levels.count(40)
    # the old camera's frames, then the new one's; a slow model may find the old camera's last
    # queued frame stale once the new camera fills the pool (a live source drops its stalest
    # frame rather than lag), and then it is counted as dropped
    assert levels == [40] * old + [200] * (8 - old)
    assert old == 3 or (old >= 1 and invoke_s > 0 and summary["dropped_frames"] >= 3 - old)
    # the events sit between the last frame of the old camera and the first of the new one
    kinds = ["frame" if "frame" in x else "event" for x in lines]
    assert kinds == ["frame"] * old + ["event"] * 3 + ["frame"] * (8 - old)
    assert summary["reconnects"] == 1 and summary["frames"] == 8
    assert all(c.closed for c in opened)  # the lost camera and the last one, both released


def test_without_reconnect_a_lost_camera_still_ends_the_run(model, monkeypatch):
    opener, opened = _script(monkeypatch, [_Camera(40, 3), _Camera(200, None)])
    with pytest.raises(demo.DemoError, match="stopped delivering"):
        _run(model, opener)
    assert len(opened) == 1 and opened[0].closed


class _UsbCameras:
    """Stands in for ``cv2.VideoCapture`` on a camera index (no camera exists here; anything
    else opens the real one), so the CLI's ``--source 0`` reaches edgeeff's real
    :class:`VideoSource`: the n-th camera opened delivers ``script[n]`` frames and then fails
    every read, as an unplugged camera does (``None``: it delivers until released)."""

    def __init__(self, monkeypatch, script):
        self.script, self.real = list(script), cv2.VideoCapture
        monkeypatch.setattr(cv2, "VideoCapture", self.open)

    def open(self, target, *args):
        if not isinstance(target, int):
            return self.real(target, *args)
        return _UsbCamera(self.script.pop(0))


class _UsbCamera:
    def __init__(self, frames):
        self.left, self.opened = frames, True

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self):
        if not self.opened or self.left == 0:
            return False, None
        if self.left is not None:
            self.left -= 1
        return True, np.full((48, 64, 3), 90, np.uint8)

    def release(self):
        self.opened = False


def test_cli_reconnect_option_reports_json_events(model, monkeypatch):
    """--reconnect reaches run_demo through the CLI; without it the exit code is 1."""
    from click.testing import CliRunner

    from edgeeff.cli import main

    monkeypatch.setattr(demo.sources, "RECONNECT_DELAYS_S", (0.01, 0.02, 0.04))
    _UsbCameras(monkeypatch, [2, None])
    r = CliRunner().invoke(main, ["demo", "--model", str(model), "--source", "0", "--headless",
                                  "--reconnect", "--max-frames", "4"])
    assert r.exit_code == 0, r.output
    events = [json.loads(x) for x in r.stdout.splitlines() if '"event"' in x]
    assert events == [{"event": "reconnect", "attempt": 1, "source": "camera:0",
                       "delay_s": 0.01, "reason": "camera:0 stopped delivering frames",
                       "ok": True, "error": None}]
    _UsbCameras(monkeypatch, [2])
    r = CliRunner().invoke(main, ["demo", "--model", str(model), "--source", "0", "--headless"])
    assert r.exit_code == 1 and "stopped delivering" in r.stderr


class _ClosingPipe(io.StringIO):
    """stdout piped into a reader that quits after ``keep`` lines (``edgeeff demo | head -3``)."""

    def __init__(self, keep):
        super().__init__()
        self.keep = keep

    def write(self, s):
        if self.getvalue().count("\n") >= self.keep:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(s)


def test_a_closed_output_pipe_ends_the_run_from_the_reporter_thread(model, tmp_path):
    """The JSON lines are written by the reporter thread; its failure reaches run_demo's
    caller (the CLI turns it into a quiet exit), and no demo thread outlives the run."""
    clip = corrupt_clip(tmp_path / "clip.avi", n=30, bad=())
    out = _ClosingPipe(3)
    with pytest.raises(BrokenPipeError):
        demo.run_demo(Watched(model), str(clip), True, False, 1, None, out=out,
                      err=io.StringIO())
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["frame"] for x in lines] == [1, 2, 3]
    left = [t for t in threading.enumerate() if t.name in ("edgeeff-reporter", "edgeeff-capture")]
    for t in left:  # ending, if not yet ended: wait for that, not for a time
        t.join(timeout=60)  # a safety net against a hung test, not a measurement
    assert not [t.name for t in left if t.is_alive()]


def test_opencv_gets_the_cores_the_interpreter_leaves_and_gets_them_back(model, tmp_path):
    """While the demo runs, OpenCV's pool is capture_threads() (not every core, the
    interpreter's too); afterwards the caller's setting is back."""
    clip = corrupt_clip(tmp_path / "clip.avi", n=5, bad=())
    before = demo.loop.capture_threads(1) + 5  # any other setting of the caller's
    cv2.setNumThreads(before)
    try:
        clf = Watched(model)  # one interpreter thread
        demo.run_demo(clf, str(clip), True, False, 1, None, out=io.StringIO(),
                      err=io.StringIO())
        seen = clf.cv_threads
        assert seen and set(seen) == {demo.loop.capture_threads(1)}
        assert cv2.getNumThreads() == before
    finally:
        cv2.setNumThreads(-1)  # OpenCV's default

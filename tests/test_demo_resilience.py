"""The demo keeps going: damaged video frames are skipped and counted, a camera that goes away
is reopened with backoff under --reconnect (and ends the run with exit 1 without it).

No model is needed: a stand-in classifier reports the mean brightness of the pixels it was
given, so the tests can tell which frames reached it.
"""

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.preprocess import Preprocessor
from tests.conftest import needs

cv2 = needs("cv2")

from edgeeff.device import demo  # noqa: E402


class StubClassifier:
    """Stands in for runtime.Classifier: 'scores' are the input's mean brightness."""

    path, runtime, delegate = Path("stub.tflite"), "stub", None
    resolution, input_dtype, raw_pixel_input = 32, np.uint8, True
    preprocessor = Preprocessor(32)

    def __init__(self, invoke_s=0.0):
        self.invoke_s = invoke_s

    def set_input(self, x):
        self.level = float(x.mean())

    def invoke(self, x=None):
        if x is not None:
            self.set_input(x)
        time.sleep(self.invoke_s)
        return np.array([self.level])

    def top_k(self, scores, k):
        return [{"label": "brightness", "score": round(float(scores[0]), 1)}]


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


def _run(source, invoke_s=0.0, **kw):
    out, err = io.StringIO(), io.StringIO()
    summary = demo.run_demo(StubClassifier(invoke_s), str(source), True, False, 1,
                            kw.pop("max_frames", None), out=out, err=err, **kw)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    return summary, lines, err.getvalue()


def test_damaged_video_frames_are_skipped_and_counted(tmp_path):
    clip = corrupt_clip(tmp_path / "bad.avi")
    summary, lines, err = _run(clip)
    frames = [x for x in lines if "frame" in x]
    assert summary["frames"] == len(frames) == 25 and summary["skipped_frames"] == 5
    levels = [x["top"][0]["score"] for x in frames]
    # every good frame, in order, the last ones included (brightness 8 * i)
    expected = [8 * i for i in range(30) if i not in range(9, 14)]
    assert np.allclose(levels, expected, atol=3)
    assert "5 undecodable skipped" in err


def test_unreadable_files_in_an_image_folder_are_skipped_and_counted(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 40, 3), 50 * i, np.uint8))
    (tmp_path / "1b.png").write_bytes(b"\x89PNG broken")
    summary, lines, _ = _run(tmp_path)
    assert summary["frames"] == 3 and summary["skipped_frames"] == 1


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
    """open_source returns, in turn, each step: a _Camera, or an exception to raise."""
    opened = []

    def opener(source):
        step = steps.pop(0)
        if isinstance(step, Exception):
            raise step
        opened.append(step)
        return step

    monkeypatch.setattr(demo.loop, "open_source", opener)
    monkeypatch.setattr(demo.sources, "RECONNECT_DELAYS_S", (0.01, 0.02, 0.04))
    return opened


@pytest.mark.parametrize("invoke_s", [0.0, 0.05])  # a fast and a slow model
def test_camera_that_disconnects_is_reopened_with_backoff(monkeypatch, invoke_s):
    opened = _script(monkeypatch, [
        _Camera(40, 3),
        EdgeeffError("cannot open camera 0: check it is connected"),
        EdgeeffError("cannot open camera 0: check it is connected"),
        _Camera(200, None),
    ])
    summary, lines, _ = _run("0", invoke_s, reconnect=True, max_frames=8)
    events = [x for x in lines if x.get("event") == "reconnect"]
    assert [(e["attempt"], e["ok"]) for e in events] == [(1, False), (2, False), (3, True)]
    assert [e["delay_s"] for e in events] == [0.01, 0.02, 0.04]  # backing off
    assert "stopped delivering" in events[0]["reason"] and "cannot open" in events[0]["error"]
    frames = [x for x in lines if "frame" in x]
    levels = [round(f["top"][0]["score"]) for f in frames]
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


def test_without_reconnect_a_lost_camera_still_ends_the_run(monkeypatch):
    opened = _script(monkeypatch, [_Camera(40, 3), _Camera(200, None)])
    with pytest.raises(demo.DemoError, match="stopped delivering"):
        _run("0")
    assert len(opened) == 1 and opened[0].closed


def test_cli_reconnect_option_reports_json_events(monkeypatch, tmp_path):
    """--reconnect reaches run_demo through the CLI; without it the exit code is 1."""
    from click.testing import CliRunner

    from edgeeff.cli import main
    from edgeeff.device import runtime

    monkeypatch.setattr(runtime, "resolve_model_path", lambda m, delegate=None: Path(m))
    monkeypatch.setattr(runtime, "Classifier", lambda *a, **k: StubClassifier())
    _script(monkeypatch, [_Camera(40, 2), _Camera(90, None)])
    r = CliRunner().invoke(main, ["demo", "--model", "m.tflite", "--source", "0", "--headless",
                                  "--reconnect", "--max-frames", "4"])
    assert r.exit_code == 0, r.output
    events = [json.loads(x) for x in r.stdout.splitlines() if '"event"' in x]
    assert events == [{"event": "reconnect", "attempt": 1, "source": "camera:fake",
                       "delay_s": 0.01, "reason": "camera:fake stopped delivering frames",
                       "ok": True, "error": None}]
    _script(monkeypatch, [_Camera(40, 2)])
    r = CliRunner().invoke(main, ["demo", "--model", "m.tflite", "--source", "0", "--headless"])
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


def test_a_closed_output_pipe_ends_the_run_from_the_reporter_thread(tmp_path):
    """The JSON lines are written by the reporter thread; its failure reaches run_demo's
    caller (the CLI turns it into a quiet exit), and no demo thread outlives the run."""
    import threading

    clip = corrupt_clip(tmp_path / "clip.avi", n=30, bad=())
    out = _ClosingPipe(3)
    with pytest.raises(BrokenPipeError):
        demo.run_demo(StubClassifier(), str(clip), True, False, 1, None, out=out,
                      err=io.StringIO())
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["frame"] for x in lines] == [1, 2, 3]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            t.name in ("edgeeff-reporter", "edgeeff-capture") for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate()
                if t.name in ("edgeeff-reporter", "edgeeff-capture")]


def test_opencv_gets_the_cores_the_interpreter_leaves_and_gets_them_back(tmp_path):
    """While the demo runs, OpenCV's pool is capture_threads() (not every core, the
    interpreter's too); afterwards the caller's setting is back."""
    seen = []

    class Recording(StubClassifier):
        num_threads = 1

        def invoke(self, x=None):
            seen.append(cv2.getNumThreads())
            return super().invoke(x)

    clip = corrupt_clip(tmp_path / "clip.avi", n=5, bad=())
    before = demo.loop.capture_threads(1) + 5  # any other setting of the caller's
    cv2.setNumThreads(before)
    try:
        demo.run_demo(Recording(), str(clip), True, False, 1, None, out=io.StringIO(),
                      err=io.StringIO())
        assert seen and set(seen) == {demo.loop.capture_threads(1)}
        assert cv2.getNumThreads() == before
    finally:
        cv2.setNumThreads(-1)  # OpenCV's default

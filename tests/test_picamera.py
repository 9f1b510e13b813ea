"""The Raspberry Pi camera path of ``edgeeff demo --source picamera``, with a stand-in picamera2.

The real picamera2 needs libcamera and a camera module on a Raspberry Pi, so a stand-in
package is put on sys.path. It models the three behaviours edgeeff relies on, as picamera2's
maintainers describe them:
* pixel formats take libcamera's little-endian names: "RGB888" arrays hold [B, G, R] per
  pixel (raspberrypi/picamera2#191, #260 - it is what OpenCV calls BGR), "BGR888" holds
  [R, G, B];
* a camera stays acquired until close(): a new Picamera2() after only stop() fails with
  "Failed to acquire camera" (raspberrypi/picamera2#306, #483);
* capture_array() blocks until the next frame (here: a short sleep).
Everything after the camera (capture thread, stale-frame dropping, preprocessing, the model)
is edgeeff's real code and a real int8 model.
"""

from __future__ import annotations

import sys
import time

import pytest

from tests.conftest import needs
from tests.tiny_export import tiny_export

needs("ai_edge_litert")
needs("cv2")

STAND_IN = '''
"""Stand-in picamera2 for edgeeff's tests (see tests/test_picamera.py)."""
import time

import numpy as np

held = False          # a camera is acquired (until close())
configured = []       # every configuration passed to configure()
scene = lambda n: (255, 0, 0)  # frame number -> (R, G, B) the camera sees
frame_interval_s = 0.001
frames_made = 0


class Picamera2:
    def __init__(self, camera_num=0):
        global held
        if held:
            raise RuntimeError("Failed to acquire camera")
        held = True
        self.config, self.started = None, False

    def create_video_configuration(self, main=None, **kw):
        return {"main": dict(main or {})}

    def configure(self, config):
        configured.append(config)
        self.config = config

    def start(self):
        self.started = True

    def capture_array(self, name="main"):
        global frames_made
        if not self.started:
            raise RuntimeError("camera not started")
        time.sleep(frame_interval_s)
        main = self.config["main"]
        w, h = main.get("size", (640, 480))
        r, g, b = scene(frames_made)
        frames_made += 1
        layout = {"RGB888": (b, g, r), "BGR888": (r, g, b)}[main["format"]]
        frame = np.empty((h, w, 3), np.uint8)
        frame[:] = layout
        return frame

    def stop(self):
        self.started = False

    def close(self):
        global held
        self.stop()
        held = False
'''


@pytest.fixture
def camera(tmp_path, monkeypatch):
    """The stand-in picamera2 module, importable as ``picamera2``."""
    (tmp_path / "picamera2").mkdir()
    (tmp_path / "picamera2" / "__init__.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    import picamera2

    yield picamera2
    sys.modules.pop("picamera2", None)


@pytest.fixture(scope="module")
def model():
    return tiny_export() / "model_int8.tflite"


class _Sink:
    def __init__(self):
        self.text = []

    def write(self, s):
        self.text.append(s)

    def flush(self):
        pass


def _run(model, camera, max_frames, wait_frames=0):
    """Run the demo on the stand-in camera; the model inputs it saw (RGB crops) and the summary.

    ``wait_frames``: a slow model, which finishes each frame only once the camera has made
    that many more frames (a count to wait for, not a time)."""
    from edgeeff.device import demo
    from edgeeff.device.runtime import Classifier

    clf = Classifier(model, num_threads=1)
    assert clf.raw_pixel_input  # uint8 raw RGB in: the input buffer is the crop itself
    seen, invoke = [], clf.invoke
    clf.made_at_invoke = []

    def spy(tensor=None):  # the demo hands invoke the capture thread's ready input tensor
        seen.append((clf._buf if tensor is None else tensor)[0].copy())
        made = camera.frames_made
        clf.made_at_invoke.append(made)
        while camera.frames_made < made + wait_frames:
            time.sleep(0.001)
        return invoke(tensor)

    clf.invoke = spy
    summary = demo.run_demo(clf, "picamera", True, False, 1, max_frames, out=_Sink(), err=_Sink())
    summary["made_at_invoke"] = clf.made_at_invoke
    return seen, summary


def test_red_scene_reaches_the_model_as_red(model, camera):
    seen, summary = _run(model, camera, max_frames=3)
    assert camera.configured[0]["main"]["format"] == "RGB888"  # i.e. [B, G, R] in memory
    assert summary["frames"] == 3 and len(seen) == 3
    for crop in seen:
        assert crop.shape[-1] == 3 and (crop == [255, 0, 0]).all(), crop[0, 0]  # RGB red
    assert not camera.held  # the demo released the camera


def test_live_camera_drops_stale_frames_and_the_model_sees_the_newest(model, camera):
    from edgeeff.device import demo

    camera.scene = lambda n: (n % 256, n // 256, 7)  # the frame number, readable in RGB
    camera.frame_interval_s = 0.001
    pool = demo.QUEUE_SIZE + 2
    # the camera makes more frames than the pool holds while the model runs on each
    seen, summary = _run(model, camera, max_frames=5, wait_frames=pool + 2)
    numbers = [int(c[0, 0, 0]) + 256 * int(c[0, 0, 1]) for c in seen]
    assert all((c[..., 2] == 7).all() for c in seen)  # blue stayed blue: colour order intact
    assert numbers == sorted(numbers) and len(set(numbers)) == 5
    assert summary["dropped_frames"] > 0
    gaps = [b - a for a, b in zip(numbers, numbers[1:])]
    assert max(gaps) > 1, numbers  # frames captured while the model ran were skipped
    # never older than the buffer pool allows: the model works on one of the newest frames
    for n, made in zip(numbers, summary["made_at_invoke"]):
        assert made - 1 - n <= pool, (numbers, summary["made_at_invoke"])


def test_closing_the_source_releases_the_camera_for_a_reopen(camera):
    """--reconnect opens the camera again after closing it; stop() alone keeps it acquired."""
    from edgeeff.device import demo

    first = demo.open_source("picamera")
    next(iter(first.frames()))
    first.close()
    assert not camera.held
    second = demo.open_source("picamera")  # failed before close() released the camera
    frame = next(iter(second.frames()))
    second.close()
    assert frame.shape == (480, 640, 3) and (frame[0, 0] == [0, 0, 255]).all()  # BGR red


def test_ctrl_c_while_serving_releases_the_camera_and_the_port(model, camera):
    """Ctrl-C (or SIGTERM, raised as KeyboardInterrupt by the CLI) with viewers connected:
    the camera is closed, the server's threads end and its port can be served again."""
    import socket
    import threading
    import urllib.request

    from edgeeff.device import demo
    from edgeeff.device.runtime import Classifier

    clf = Classifier(model, num_threads=1)
    invoke, calls, watching = clf.invoke, [], threading.Event()

    def interrupted_once_watched(tensor=None):
        calls.append(1)
        # Ctrl-C once the viewer has had a frame's event (the count: a safety net)
        if (watching.is_set() and len(calls) >= 10) or len(calls) == 20_000:
            raise KeyboardInterrupt
        return invoke(tensor)

    clf.invoke = interrupted_once_watched
    before = set(threading.enumerate())
    server = demo.DemoServer("127.0.0.1", 0).start()
    port = server.port
    viewer = []

    def watch():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/events", timeout=30) as r:
            while (line := r.readline()) and not line.startswith(b"data: "):
                pass
            if line:  # a frame's event
                viewer.append(line)
                watching.set()
            r.read()  # until the server ends the stream

    t = threading.Thread(target=watch)
    t.start()
    with pytest.raises(KeyboardInterrupt), server:
        demo.run_demo(clf, "picamera", True, False, 1, None, out=_Sink(), err=_Sink(),
                      server=server)
    t.join(timeout=10)
    assert viewer and not t.is_alive()  # the viewer was served, then its stream was ended
    assert not camera.held  # the camera was closed
    assert set(threading.enumerate()) <= before  # capture, server, encoder, client: all gone
    with socket.socket() as s:  # nothing listens on the port any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
    demo.DemoServer("127.0.0.1", port).close()  # and it can be served again

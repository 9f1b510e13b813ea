"""Device side: demo, bench, bundle, eval on .tflite — and all of it without TensorFlow."""

import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from tests.conftest import ROOT, needs, run_cli

needs("ai_edge_litert")
needs("cv2")

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup

BLOCK_TF = (
    "import sys, importlib.abc\n"
    "class _Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'onnx2tf'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, _Block())\n"
    "from edgeeff.cli import main\n"
    "sys.argv = ['edgeeff'] + sys.argv[1:]\n"
    "main()\n"
)


def run_without_tf(*args, timeout=300):
    return subprocess.run([sys.executable, "-c", BLOCK_TF, *args], capture_output=True,
                          text=True, timeout=timeout)


def test_demo_headless_names_the_right_class_on_sample_clip(lite0_export):
    r = run_cli("demo", "--model", str(lite0_export), "--source", "sample", "--headless",
                "--max-frames", "32", "--threads", "2")
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(frames) == 32 and [f["frame"] for f in frames] == list(range(1, 33))
    for f in frames:
        assert {"frame", "top", "latency_ms", "fps"} <= set(f) and len(f["top"]) == 3
        assert f["latency_ms"] > 0 and set(f["top"][0]) == {"index", "label", "score"}
    cat = [f["top"][0]["index"] in CATS for f in frames[:8]]
    coffee = [f["top"][0]["index"] in COFFEE for f in frames[8:16]]
    assert all(cat), [f["top"][0] for f in frames[:8]]
    assert all(coffee), [f["top"][0] for f in frames[8:16]]
    assert frames[0]["top"][0]["label"] in ("tabby", "tiger cat", "Egyptian cat", "Persian cat",
                                            "Siamese cat")
    assert "ai_edge_litert" in r.stderr and "raw pixels" in r.stderr


def test_demo_image_folder_and_single_image(lite0_export, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("chelsea_0.jpg", "coffee_0.jpg", "coins_0.jpg"):  # coins: grayscale JPEG
        (folder / name).write_bytes((ROOT / "calibration" / name).read_bytes())
    r = run_cli("demo", "--model", str(lite0_export / "model_int8.tflite"), "--source",
                str(folder), "--headless", "--top-k", "5")
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(frames) == 3 and len(frames[0]["top"]) == 5
    assert frames[0]["top"][0]["index"] in CATS and frames[1]["top"][0]["index"] in COFFEE
    r = run_cli("demo", "--model", str(lite0_export), "--source", str(folder / "chelsea_0.jpg"),
                "--headless")
    assert r.returncode == 0 and json.loads(r.stdout)["top"][0]["index"] in CATS


@pytest.mark.parametrize("source,msg", [
    ("/dev/video9", "cannot open camera /dev/video9"),
    ("7", "cannot open camera 7"),
    ("missing.mp4", "video file not found"),
    ("picamera", "picamera2 is not importable"),
])
def test_demo_missing_sources_fail_cleanly(lite0_export, source, msg):
    r = run_cli("demo", "--model", str(lite0_export), "--source", source, "--headless",
                "--max-frames", "2", timeout=60)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


def test_demo_without_display_or_edgetpu_says_what_to_do(lite0_export):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-m", "edgeeff.cli", "demo", "--model",
                        str(lite0_export), "--source", "sample", "--max-frames", "1"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "--headless" in r.stderr
    r = run_cli("demo", "--model", str(lite0_export), "--delegate", "edgetpu", "--headless")
    assert r.returncode == 2 and "edgetpu_compiler" in r.stderr


def test_camera_that_stops_delivering_exits_nonzero(lite0_export):
    from edgeeff.device import demo
    from edgeeff.device.runtime import Classifier

    class Flaky(demo.Source):
        live, name = True, "camera:fake"

        def frames(self):
            for _ in range(3):
                yield np.zeros((240, 320, 3), np.uint8)
            raise demo.DemoError("camera:fake stopped delivering frames")

    clf = Classifier(lite0_export / "model_int8.tflite", num_threads=2)
    out = []

    class W:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass

    with pytest.raises(demo.DemoError, match="stopped delivering"):
        demo.run_demo(clf, Flaky, True, False, 3, None, out=W(), err=W())


def test_live_capture_drops_stale_frames_instead_of_lagging():
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.device import demo

    class Burst(demo.Source):
        live = True

        def frames(self):
            for i in range(50):
                yield np.full((4, 4, 3), i, np.uint8)

    cap = demo.Capture(Burst(), Preprocessor(8))
    cap.start()
    cap.join(timeout=5)
    items = []
    while not cap.q.empty():
        items.append(cap.q.get_nowait())
    frames = [x for x in items if x is not demo.END]
    # nobody consumed: the pool of QUEUE_SIZE + 2 buffers holds the newest frames only
    assert cap.dropped == 50 - len(cap.bufs) and len(frames) == len(cap.bufs)
    newest_frame, slot = frames[-1]
    # preprocessed too: the input tensor (float32 for this preprocessor) holds the pixels
    assert newest_frame[0, 0, 0] == 49 and (cap.bufs[slot][0] == 49).all()


def test_bench_compares_float_and_int8(lite0_export):
    r = run_cli("bench", str(lite0_export), "--runs", "20", "--warmup", "3", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    names = [m["model"] for m in res["models"]]
    assert names == ["model_float32.tflite", "model_float16.tflite", "model_int8.tflite"]
    for m in res["models"]:
        assert m["runtime"] == "ai_edge_litert" and m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"]
        assert m["throughput_per_s"] > 0 and m["peak_rss_bytes"] > 10 * 2**20
    assert res["int8_speedup_p50"] > 0


def test_bundle_for_pi4(lite0_export, tmp_path):
    out = tmp_path / "b"
    r = run_cli("bundle", str(lite0_export), "--target", "pi4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    names = {p.name for p in out.iterdir()}
    assert {"model_int8.tflite", "labels.txt", "model_card.json", "run.sh", "README.txt",
            "edgeeff-demo@.service"} <= names
    assert "--source \"${EDGEEFF_SOURCE:-picamera}\"" in (out / "run.sh").read_text()
    with tarfile.open(tmp_path / "b.tar.gz") as t:
        assert "b/model_int8.tflite" in t.getnames()
    r = run_cli("bundle", str(lite0_export), "--target", "stm32h743", "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "tflm" in r.stderr


def test_runtime_commands_work_with_tensorflow_absent(lite0_export, tmp_path):
    spec = tmp_path / "s.json"
    for args in (["devices"], ["fit", "--device", "pi4", "--max-mflops", "400", "--out", str(spec)],
                 ["info", "--preset", "lite0"],
                 ["bench", str(lite0_export / "model_int8.tflite"), "--runs", "3"],
                 ["demo", "--model", str(lite0_export), "--source", "sample", "--headless",
                  "--max-frames", "3"]):
        r = run_without_tf(*args)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    data = tmp_path / "cats"
    (data / "Egyptian cat").mkdir(parents=True)
    (data / "Egyptian cat" / "c.jpg").write_bytes((ROOT / "calibration" / "chelsea_0.jpg").read_bytes())
    r = run_without_tf("eval", str(lite0_export / "model_int8.tflite"), "--data", str(data),
                       "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["images"] == 1 and res["top5"] == 1.0
    r = run_without_tf("export", "--preset", "lite0", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "pip install 'edgeeff[export]'" in r.stderr


def test_stopping_early_shuts_capture_down_cleanly(lite0_export):
    """--max-frames stops while the capture thread may still be reading: the source must be
    released only after that thread is out of it (releasing mid-read aborted or hung)."""
    for _ in range(4):
        r = run_cli("demo", "--model", str(lite0_export), "--source", "sample", "--headless",
                    "--max-frames", "1", timeout=60)
        assert r.returncode == 0, r.stderr[-500:]
        assert "terminate called" not in r.stderr and len(r.stdout.splitlines()) == 1

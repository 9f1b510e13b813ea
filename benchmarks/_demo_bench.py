"""Shared pieces of the demo benchmarks: a model, a webcam-like clip, viewers of ``--serve``.

Viewers run in a child process (``python benchmarks/_demo_bench.py viewers PORT N [churn]``), as
browsers on other machines would: their reading costs the demo's process nothing but the
server's own work, while still competing for this machine's cores (a conservative setting).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover - [runtime] brings psutil
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def demo_parser(doc: str, section: str | None = None, frames_help: str | None = None,
                frames: int = 300) -> argparse.ArgumentParser:
    """The options the demo benchmarks share: the model (positional, optional) and
    ``--threads``; ``--frames`` when ``frames_help`` says what they count; ``--no-docs`` when the
    script writes ``section`` of docs/benchmarks.md."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("model", nargs="?", metavar="EXPORT_DIR | MODEL.tflite",
                    help="an export directory (its model_int8.tflite) or a .tflite; "
                         "default: export Lite0 int8 first, in a subprocess")
    if frames_help:
        ap.add_argument("--frames", type=int, default=frames, metavar="N",
                        help=f"{frames_help} (default {frames})")
    ap.add_argument("--threads", type=int, metavar="N",
                    help="interpreter threads (default: the demo's, all usable cores but one)")
    if section:
        ap.add_argument("--no-docs", action="store_true",
                        help=f"do not write the {section} section of docs/benchmarks.md")
    return ap


def model_path(model: str | None, workdir: Path) -> Path:
    """The model named on the command line, or Lite0 int8 exported in a subprocess (so
    TensorFlow stays out of the measured process)."""
    if model:
        p = Path(model)
        return p / "model_int8.tflite" if p.is_dir() else p
    out = workdir / "lite0"
    print("exporting Lite0 int8 (a subprocess)...", flush=True)
    r = subprocess.run([sys.executable, "-m", "edgeeff", "export", "--preset", "lite0", "--int8",
                        "--out", str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])
    return out / "model_int8.tflite"


def webcam_clip(path: Path, frames: int) -> Path:
    """A 640x480 MJPG clip panning across the bundled photos, as a USB webcam delivers."""
    import cv2
    import numpy as np

    from edgeeff.core.data import data_dir

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    photos = [cv2.imread(str(p)) for p in sorted(data_dir("calibration").glob("*_0.jpg"))]
    for i in range(frames):
        img = photos[(i // 30) % len(photos)]
        big = cv2.resize(img, (800, 600), interpolation=cv2.INTER_CUBIC)
        x = (i % 30) * 5
        w.write(np.ascontiguousarray(big[60:540, x:x + 640]))
    w.release()
    return path


def start_viewers(port: int, n: int, churn: bool = False) -> subprocess.Popen:
    """``n`` viewers in a child process, each one page's worth: the MJPEG stream and the event
    stream, read as fast as they come. ``churn``: viewers connect, read a little, drop (some
    with a reset), and come back, for ever."""
    p = subprocess.Popen([sys.executable, __file__, "viewers", str(port), str(n),
                          "churn" if churn else "steady"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def stop_viewers(p: subprocess.Popen) -> str:
    p.terminate()
    out, _ = p.communicate(timeout=30)
    return out.strip()


def _steady(port: int, path: str, counter: list, stop: threading.Event) -> None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            while not stop.is_set():
                data = r.read(16384)
                if not data:
                    return
                counter[0] += len(data)
    except OSError:
        pass


def _churn(port: int, counter: list, stop: threading.Event, seed: int) -> None:
    rnd = random.Random(seed)
    while not stop.is_set():
        path = rnd.choice(["/stream.mjpg", "/events", "/predictions", "/"])
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            end = time.monotonic() + rnd.uniform(0.1, 2.0)
            while time.monotonic() < end and not stop.is_set():
                data = s.recv(16384)
                if not data:
                    break
                counter[0] += len(data)
            if rnd.random() < 0.5:  # vanish with a reset, as a crashed browser does
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            counter[1] += 1
        except OSError:
            time.sleep(0.1)


def _viewers_main(port: int, n: int, mode: str) -> None:
    import signal

    stop = threading.Event()
    counter = [0, 0]
    threads = []
    for i in range(n):
        if mode == "churn":
            threads.append(threading.Thread(target=_churn, args=(port, counter, stop, i)))
        else:
            for path in ("/stream.mjpg", "/events"):
                threads.append(threading.Thread(target=_steady, args=(port, path, counter, stop)))
    for t in threads:
        t.daemon = True
        t.start()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
    print(f"{counter[0]} bytes read, {counter[1]} connections dropped", flush=True)


if __name__ == "__main__":
    _viewers_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])

"""``edgeeff demo --serve`` under load: FPS with 5 viewers vs headless, and an RSS soak.

FPS: the same model and a 640x480 MJPG clip, run headless and served to 5 viewers (each one
browser page's worth: the MJPEG stream and the event stream, read in a child process),
interleaved three times; the ratio of the sums is the figure (target >= 0.9).

Soak: the sample clip served (looping) for ``--minutes`` (default 10) while viewers connect,
read for 0.1-2 s and drop (half of them with a connection reset), over and over. The
process's RSS is sampled every few seconds; start (after a warm-up), end and max are printed,
with the thread count, which must come back to where it started.

Usage: python benchmarks/demo_serve.py [EXPORT_DIR | MODEL.tflite] [--frames N]
[--minutes M] [--viewers N] [--threads N] [--no-soak] [--no-docs]
"""

from __future__ import annotations

import argparse
import io
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _demo_bench import demo_parser, model_path, rss_bytes, start_viewers, stop_viewers, webcam_clip  # noqa: E402


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def fps_ratio(clf, video: Path, frames: int, viewers: int) -> dict:
    from edgeeff.device.demo import DemoServer, run_demo

    def served() -> float:
        with DemoServer("127.0.0.1", 0) as server:
            v = start_viewers(server.port, viewers)
            deadline = time.monotonic() + 10
            while server.clients < 2 * viewers and time.monotonic() < deadline:
                time.sleep(0.05)
            connected = server.clients
            try:
                fps = run_demo(clf, str(video), False, False, 3, frames, out=io.StringIO(),
                               err=io.StringIO(), server=server)["fps"]
            finally:
                got = stop_viewers(v)
        print(f"  served: {fps:.1f} FPS, {connected} connections; viewers: {got}", flush=True)
        return fps

    def headless() -> float:
        fps = run_demo(clf, str(video), True, False, 3, frames, out=io.StringIO(),
                       err=io.StringIO())["fps"]
        print(f"  headless: {fps:.1f} FPS", flush=True)
        return fps

    h = s = 0.0
    for _ in range(3):
        h += headless()
        s += served()
    return {"headless": h / 3, "served": s / 3, "ratio": s / h}


def soak(clf, minutes: float, viewers: int) -> dict:
    from edgeeff.device.demo import DemoServer, run_demo

    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.wait(5.0):
            samples.append((time.monotonic() - t0, rss_bytes(), threading.active_count()))

    def end(*_):
        raise KeyboardInterrupt

    with DemoServer("127.0.0.1", 0) as server:
        v = start_viewers(server.port, viewers, churn=True)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        prev = signal.signal(signal.SIGALRM, end)
        signal.setitimer(signal.ITIMER_REAL, minutes * 60)
        frames = 0
        try:
            while True:  # run_demo loops the sample while serving; the alarm ends it
                frames += run_demo(clf, "sample", False, False, 3, None, out=io.StringIO(),
                                   err=io.StringIO(), server=server)["frames"]
        except KeyboardInterrupt:
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, prev)
            stop.set()
            got = stop_viewers(v)
        frame = server.latest[0] if server.latest else 0
        time.sleep(2.0)  # let the last client threads notice their sockets closed
        clients_left = server.clients
    warm = [s for s in samples if s[0] >= min(30.0, minutes * 60 / 4)] or samples
    start, end_ = warm[0], samples[-1]
    res = {"minutes": (time.monotonic() - t0) / 60, "frames": frame, "start_rss": start[1],
           "end_rss": end_[1], "max_rss": max(s[1] for s in warm), "start_threads": start[2],
           "end_threads": end_[2], "clients_left": clients_left, "viewers": got}
    print(f"soak {res['minutes']:.1f} min, {frame} frames served, viewers: {got}")
    print(f"RSS start {_mb(res['start_rss'])} (at {start[0]:.0f} s), end {_mb(res['end_rss'])}, "
          f"max {_mb(res['max_rss'])}; threads {res['start_threads']} -> {res['end_threads']}, "
          f"client threads left after the viewers went: {clients_left}", flush=True)
    return res


def parse(argv: list[str]) -> argparse.Namespace:
    ap = demo_parser(__doc__, "demo_serve", "frames per FPS run")
    ap.add_argument("--minutes", type=float, default=10.0, metavar="M",
                    help="length of the RSS soak (default 10)")
    ap.add_argument("--viewers", type=int, default=5, metavar="N",
                    help="viewers in the FPS runs and the soak (default 5)")
    ap.add_argument("--no-soak", action="store_true", help="measure FPS only, skip the soak")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    import numpy as np

    from edgeeff.device.demo import default_threads
    from edgeeff.device.runtime import Classifier

    frames, minutes, viewers = a.frames, a.minutes, a.viewers
    threads = a.threads if a.threads is not None else default_threads()
    with tempfile.TemporaryDirectory() as d:
        model = model_path(a.model, Path(d))
        clf = Classifier(model, num_threads=threads)
        clf.set_input(np.zeros((clf.resolution, clf.resolution, 3), np.uint8))
        for _ in range(20):
            clf.invoke()
        video = webcam_clip(Path(d) / "clip.avi", frames)
        print(f"FPS, headless vs served to {viewers} viewers ({frames} frames, {threads} "
              "threads):", flush=True)
        r = fps_ratio(clf, video, frames, viewers)
        print(f"headless {r['headless']:.1f} FPS, served to {viewers} viewers "
              f"{r['served']:.1f} FPS: ratio {r['ratio']:.2f} (target >= 0.9)", flush=True)
        s = None if a.no_soak else soak(clf, minutes, viewers)
    if not a.no_docs:
        from _page import write_section

        body = (f"| run | FPS |\n|---|---|\n| headless | {r['headless']:.1f} |\n"
                f"| served, {viewers} viewers | {r['served']:.1f} |\n\n"
                f"Ratio **{r['ratio']:.2f}** (target >= 0.9); {Path(model).name}, {frames} "
                f"frames of a 640x480 MJPG clip, {threads} interpreter thread(s), mean of 3 "
                "interleaved runs.")
        if s:
            body += (f"\n\nSoak, {s['minutes']:.1f} min, viewers connecting and dropping: RSS "
                     f"{_mb(s['start_rss'])} -> {_mb(s['end_rss'])} (max {_mb(s['max_rss'])}); "
                     f"threads {s['start_threads']} -> {s['end_threads']}; client threads "
                     f"left: {s['clients_left']}.")
        write_section("demo_serve", "Demo served to browsers", body,
                      "python benchmarks/demo_serve.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

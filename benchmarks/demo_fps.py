"""Demo pipeline FPS vs interpreter-only FPS, same model, same run (target >= 0.8).

End to end: `edgeeff demo` on a video file (decode in the capture thread, crop/resize/convert
into the input tensor, invoke, top-k, one JSON line per frame). Interpreter only: invoke() on a
prepared input, as many times. Uses an existing export folder or makes a Lite0 int8 one.
Usage: python benchmarks/demo_fps.py [EXPORT_DIR] [--frames N] [--threads N]

The demo's default interpreter threads leave one core to the capture thread (decoding and
preprocessing); the benchmark uses the same default for both measurements.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    import cv2
    import numpy as np

    from edgeeff.device.demo import run_demo
    from edgeeff.device.runtime import Classifier

    frames = int(argv[argv.index("--frames") + 1]) if "--frames" in argv else 300
    from edgeeff.device.demo import default_threads

    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else \
        default_threads()
    args = [a for a in argv if not a.startswith("--") and not a.isdigit()]
    with tempfile.TemporaryDirectory() as d:
        if args:
            model = Path(args[0]) / "model_int8.tflite"
        else:
            from edgeeff.core.arch import preset_spec
            from edgeeff.export import ExportRequest, run
            from edgeeff.model.quiet import import_tensorflow

            import_tensorflow()
            out = Path(d) / "exp"
            run(ExportRequest(spec=preset_spec("lite0"), weights="imagenet", int8=True, out=out),
                log=lambda m: None)
            model = out / "model_int8.tflite"
        # a 640x480 MJPG clip panning across the bundled photos, as a USB webcam would deliver
        from edgeeff.model.calibrate import default_dir

        video = Path(d) / "clip.avi"
        w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
        photos = [cv2.imread(str(p)) for p in sorted(default_dir().glob("*_0.jpg"))]
        for i in range(frames):
            img = photos[(i // 30) % len(photos)]
            big = cv2.resize(img, (800, 600), interpolation=cv2.INTER_CUBIC)
            x = (i % 30) * 5
            w.write(np.ascontiguousarray(big[60:540, x:x + 640]))
        w.release()
        clf = Classifier(model, num_threads=threads)
        clf.set_input(np.zeros((clf.resolution, clf.resolution, 3), np.uint8))
        for _ in range(20):
            clf.invoke()
        t = time.perf_counter()
        for _ in range(frames):
            clf.invoke()
        interp_fps = frames / (time.perf_counter() - t)
        summary = run_demo(clf, str(video), headless=True, as_json=False, top_k=3,
                           max_frames=None, out=io.StringIO(), err=io.StringIO())
    ratio = summary["fps"] / interp_fps
    print(f"interpreter only: {interp_fps:.1f} FPS; demo end to end on a 640x480 video: "
          f"{summary['fps']:.1f} FPS over {summary['frames']} frames ({threads} threads)")
    print(f"ratio end-to-end / interpreter-only: {ratio:.2f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Export benchmarks, each ratio against a baseline measured in the same run.

1. int8 vs float32 latency of the same Lite0 export, ai-edge-litert, 2 threads (target >= 2x).
2. `edgeeff export --int8` wall time vs a bare TFLiteConverter int8 conversion of the same
   Keras model with the same calibration images (target <= 1.3x). The bare run gets the model
   already built and the images already decoded; edgeeff's time includes building, weight
   loading, calibration decoding, the float32 model, metadata and the quantization report
   (the float32 conversion is shared with quantisation, as inside TFLiteConverter).
Usage: python benchmarks/export_speed.py [--calib DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", metavar="DIR",
                    help="calibration images for both int8 conversions (default: the bundled "
                         "ones)")
    a = ap.parse_args(argv)
    from edgeeff.model.quiet import captured_output, import_tensorflow

    tf = import_tensorflow()
    from edgeeff.core.arch import preset_spec
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.device.bench import bench
    from edgeeff.export import ExportRequest, run
    from edgeeff.export.tflite import representative
    from edgeeff.model.build import build_model
    from edgeeff.model.calibrate import load_calibration
    from edgeeff.model.pretrained import load_imagenet

    calib = a.calib
    spec = preset_spec("lite0")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "exp"
        t = time.perf_counter()
        run(ExportRequest(spec=spec, weights="imagenet", int8=True, calib=calib, out=out),
            log=lambda m: None)
        ours = time.perf_counter() - t

        # the baseline: only the int8 conversion, model and images ready
        model = build_model(spec, include_preprocessing=False, training_dropout=False)
        load_imagenet(model, spec)
        pp = Preprocessor.for_spec(spec, normalized=True)
        cs = load_calibration(calib, pp, 100)
        t = time.perf_counter()
        with captured_output():
            conv = tf.lite.TFLiteConverter.from_keras_model(model)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative(cs.images, pp)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.uint8
            conv.convert()
        bare = time.perf_counter() - t

        res = bench(out, threads=2, runs=200, warmup=20)
    f, q = res["models"]
    print(f"latency p50 (ai-edge-litert, 2 threads): float32 {f['p50_ms']:.2f} ms, "
          f"int8 {q['p50_ms']:.2f} ms")
    print(f"int8 speed-up: {res['int8_speedup_p50']:.2f}x (target >= 2)")
    print(f"export wall time: edgeeff {ours:.1f} s, bare TFLiteConverter int8 {bare:.1f} s")
    print(f"ratio edgeeff / bare converter: {ours / bare:.2f} (target <= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

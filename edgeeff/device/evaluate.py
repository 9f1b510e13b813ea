"""``edgeeff eval``: top-1/top-5 of a model on a labelled image folder.

Labels come from sub-folder names (``DIR/<class>/img.jpg``, matched to the model's labels) or,
for flat ImageNet-style folders, from ``<wnid>_...`` file names. Works on .tflite files (float
or int8, any TFLite runtime: no TensorFlow needed); ``edgeeff.model.keras_eval`` supplies the
runner for Keras ``.keras`` models.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.device.images import list_images, load_preprocessed


@dataclass
class Sample:
    path: Path
    label: int


def _norm(s: str) -> str:
    return s.strip().lower().replace(" ", "_").replace("-", "_")


def labelled_samples(folder: str | Path, labels: list[str]) -> list[Sample]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeeffError(f"data folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise EdgeeffError(f"no images under {folder}")
    by_name = {_norm(lab): i for i, lab in enumerate(labels)}
    subdirs = sorted({p.parent for p in files if p.parent != folder})
    samples: list[Sample] = []
    if subdirs and all(p.parent != folder for p in files):
        names = sorted(d.name for d in subdirs)
        generic = all(lab == f"class_{i}" for i, lab in enumerate(labels))
        for p in files:
            key = _norm(p.parent.name)
            if key in by_name:
                samples.append(Sample(p, by_name[key]))
            elif generic and len(names) == len(labels):
                samples.append(Sample(p, names.index(p.parent.name)))
            else:
                raise EdgeeffError(f"folder '{p.parent.name}' matches no label of the model")
        return samples
    if len(labels) == 1000:
        from edgeeff.core.labels import imagenet_wnids

        wnid = {w: i for i, w in enumerate(imagenet_wnids())}
        for p in files:
            w = p.name.split("_")[0]
            if w not in wnid:
                raise EdgeeffError(f"{p.name}: no <wnid>_ prefix and no class sub-folder")
            samples.append(Sample(p, wnid[w]))
        return samples
    raise EdgeeffError(f"cannot tell the labels of {folder}: use one sub-folder per class")


class TFLiteRunner:
    """A .tflite model (float or int8) with the preprocessing recorded in it."""

    def __init__(self, path: Path, threads: int | None):
        from edgeeff.device.runtime import Classifier

        self.clf = Classifier(path, num_threads=threads)
        self.preprocessor, self.labels = self.clf.preprocessor, self.clf.labels
        self.name, self.runtime = path.name, self.clf.runtime

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.clf(img) for img in batch])


def runner_for(model: str | Path, threads: int | None = None) -> TFLiteRunner:
    from edgeeff.device.runtime import resolve_model_path

    return TFLiteRunner(resolve_model_path(model), threads)


def evaluate(run, data: str | Path, batch: int = 32, progress=None) -> dict:
    """Top-1/top-5 of ``run`` (a :class:`TFLiteRunner` or edgeeff.model's Keras runner: any
    object with ``preprocessor``, ``labels``, ``name``, ``runtime`` and ``scores(batch)``)."""
    samples = labelled_samples(data, run.labels)
    top1 = top5 = 0
    errors: Counter = Counter()
    unreadable = 0
    t0 = time.perf_counter()
    infer_s = 0.0
    for i in range(0, len(samples), batch):
        chunk = samples[i:i + batch]
        imgs, labels = [], []
        for s in chunk:
            x = load_preprocessed(s.path, run.preprocessor)
            if x is None:
                unreadable += 1
                continue
            imgs.append(x)
            labels.append(s.label)
        if imgs:
            t = time.perf_counter()
            sc = run.scores(np.stack(imgs))
            infer_s += time.perf_counter() - t
            top = np.argsort(-sc, axis=1)[:, :5]
            for lab, row in zip(labels, top):
                top1 += int(row[0] == lab)
                top5 += int(lab in row)
                if row[0] != lab:
                    errors[(run.labels[lab], run.labels[row[0]])] += 1
        if progress:
            progress(len(chunk))
    n = len(samples) - unreadable
    if n == 0:
        raise EdgeeffError(f"no readable images under {data}")
    wall = time.perf_counter() - t0
    return {
        "model": run.name, "runtime": run.runtime, "images": n, "unreadable": unreadable,
        "top1": round(top1 / n, 4), "top5": round(top5 / n, 4),
        "images_per_s": round(n / wall, 2), "inference_images_per_s": round(n / infer_s, 2),
        "most_confused": [{"true": a, "predicted": b, "count": c}
                          for (a, b), c in errors.most_common(10)],
    }

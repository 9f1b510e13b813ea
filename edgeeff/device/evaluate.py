"""``edgeeff eval``: top-1/top-5 of a model on a labelled image folder.

Labels come from sub-folder names (``DIR/<class>/img.jpg``, matched to the model's labels) or,
for flat ImageNet-style folders, from ``<wnid>_...`` file names
(:class:`edgeeff.data.folder.ImageFolder`). Works on .tflite files (float
or int8, any TFLite runtime: no TensorFlow needed); ``edgeeff.model.keras_eval`` supplies the
runner for Keras ``.keras`` models.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.topk import topk
from edgeeff.data.folder import ImageFolder
from edgeeff.data.images import load_preprocessed
from edgeeff.device.runtime import Classifier, resolve_model_path


class TFLiteRunner:
    """A .tflite model (float or int8) with the preprocessing recorded in it."""

    def __init__(self, path: Path, threads: int | None):
        self.clf = Classifier(path, num_threads=threads)
        self.preprocessor, self.labels = self.clf.preprocessor, self.clf.labels
        self.name, self.runtime = path.name, self.clf.runtime

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.clf(img) for img in batch])


def runner_for(model: str | Path, threads: int | None = None) -> TFLiteRunner:
    return TFLiteRunner(resolve_model_path(model), threads)


def evaluate(run, data: str | Path, batch: int = 32, progress=None) -> dict:
    """Top-1/top-5 of ``run`` (a :class:`TFLiteRunner` or edgeeff.model's Keras runner: any
    object with ``preprocessor``, ``labels``, ``name``, ``runtime`` and ``scores(batch)``)."""
    samples = ImageFolder(data).samples(run.labels)
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
            top = topk(sc, 5)  # ties: the lower class index, on every machine
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

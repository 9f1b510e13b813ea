"""``edgeeff eval``: top-1/top-5 of a model on a labelled image folder, per-class precision,
recall and F1, the confusion matrix and the most confused pairs with example files.

Labels come from sub-folder names (``DIR/<class>/img.jpg``, matched to the model's labels) or,
for flat ImageNet-style folders, from ``<wnid>_...`` file names
(:class:`edgeeff.data.folder.ImageFolder`). Works on .tflite files (float
or int8, any TFLite runtime: no TensorFlow needed); ``edgeeff.model.keras_eval`` supplies the
runner for Keras ``.keras`` models.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeeff.core import confusion
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


FULL_MATRIX_MAX = 50  # label sets up to this size get every class in "confusion"/"per_class"
EXAMPLES = 3  # example files kept per confused pair


def evaluate(run, data: str | Path, batch: int = 32, progress=None) -> dict:
    """Top-1/top-5 of ``run`` (a :class:`TFLiteRunner` or edgeeff.model's Keras runner: any
    object with ``preprocessor``, ``labels``, ``name``, ``runtime`` and ``scores(batch)``), and
    what explains them (:mod:`edgeeff.core.confusion`, the top-1 prediction of each image):

    * ``per_class``: ``{class, precision, recall, f1, support}`` per class; ``macro_f1`` and
      ``weighted_f1`` over the classes seen as true or predicted labels;
    * ``confusion``: ``{labels, matrix}``, rows true and columns predicted. Models with up to
      :data:`FULL_MATRIX_MAX` labels get every label (``confusion_classes: "all"``); larger
      label sets (ImageNet) only the classes that occur as a true or a predicted label
      (``"seen"``: the rows and columns left out are all zero), and ``per_class`` only the
      classes with images;
    * ``most_confused``: the 10 largest errors ``{true, predicted, count, examples}`` (by count,
      then class index), ``examples`` up to 3 of their files, relative to ``data``.
    """
    folder = ImageFolder(data)
    samples = folder.samples(run.labels)
    top5 = 0
    trues: list[int] = []
    preds: list[int] = []
    examples: dict[tuple[int, int], list[str]] = {}
    unreadable = 0
    t0 = time.perf_counter()
    infer_s = 0.0
    for i in range(0, len(samples), batch):
        chunk = samples[i:i + batch]
        imgs, kept = [], []
        for s in chunk:
            x = load_preprocessed(s.path, run.preprocessor)
            if x is None:
                unreadable += 1
                continue
            imgs.append(x)
            kept.append(s)
        if imgs:
            t = time.perf_counter()
            sc = run.scores(np.stack(imgs))
            infer_s += time.perf_counter() - t
            top = topk(sc, 5)  # ties: the lower class index, on every machine
            for s, row in zip(kept, top):
                lab, pred = s.label, int(row[0])
                trues.append(lab)
                preds.append(pred)
                top5 += int(lab in row)
                if pred != lab:
                    ex = examples.setdefault((lab, pred), [])
                    if len(ex) < EXAMPLES:
                        ex.append(folder.relative(s.path))
        if progress:
            progress(len(chunk))
    n = len(samples) - unreadable
    if n == 0:
        raise EdgeeffError(f"no readable images under {data}")
    wall = time.perf_counter() - t0
    labels = list(run.labels)
    cm = confusion.confusion_matrix(trues, preds, len(labels))
    metrics = confusion.per_class(cm)
    avg = confusion.averages(cm)
    everything = len(labels) <= FULL_MATRIX_MAX
    shown = np.arange(len(labels)) if everything else confusion.seen(cm)
    listed = shown if everything else np.flatnonzero(metrics["support"] > 0)
    return {
        "model": run.name, "runtime": run.runtime, "images": n, "unreadable": unreadable,
        "top1": round(int(np.trace(cm)) / n, 4), "top5": round(top5 / n, 4),
        "images_per_s": round(n / wall, 2), "inference_images_per_s": round(n / infer_s, 2),
        "most_confused": [{"true": labels[a], "predicted": labels[b], "count": c,
                           "examples": examples[(a, b)]}
                          for a, b, c in confusion.most_confused(cm, 10)],
        "per_class": [{"class": labels[c],
                       "precision": round(float(metrics["precision"][c]), 4),
                       "recall": round(float(metrics["recall"][c]), 4),
                       "f1": round(float(metrics["f1"][c]), 4),
                       "support": int(metrics["support"][c])} for c in listed],
        "macro_f1": round(avg["macro"]["f1"], 4), "weighted_f1": round(avg["weighted"]["f1"], 4),
        "confusion_classes": "all" if everything else "seen",
        "confusion": {"labels": [labels[c] for c in shown],
                      "matrix": cm[np.ix_(shown, shown)].tolist()},
    }

"""Confusion-matrix metrics for ``edgeeff eval`` (numpy only).

Rows are true classes, columns predicted classes: ``cm[t, p]`` counts the images of class ``t``
predicted as ``p``. Per class ``c``:

* precision = ``cm[c, c] / cm[:, c].sum()`` (of the images predicted ``c``, the share that are);
* recall = ``cm[c, c] / cm[c, :].sum()`` (of the images of ``c``, the share found);
* F1 = ``2 P R / (P + R)``; support = ``cm[c, :].sum()``.

Any 0/0 is 0.0 (a class never predicted has precision 0, one with no images recall 0).
Averages (:func:`averages`) are over the classes that occur as a true or a predicted label,
as scikit-learn does when it is not given a label list: a class absent from both the data and
the predictions says nothing about the model and is left out.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(true, pred, num_classes: int) -> np.ndarray:
    """The ``num_classes`` x ``num_classes`` int64 count matrix of (true, predicted) indices."""
    t = np.asarray(true, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"a class index outside 0..{num_classes - 1}")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` (float64) and ``support`` (int64) arrays."""
    cm = np.asarray(cm)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    precision = _ratio(tp, cm.sum(axis=0))
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def seen(cm: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the classes that occur as a true or a predicted label."""
    cm = np.asarray(cm)
    return np.flatnonzero((cm.sum(axis=0) + cm.sum(axis=1)) > 0)


def averages(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """``{"macro": {...}, "weighted": {...}}``, each with ``precision``, ``recall`` and ``f1``.

    Macro: the plain mean over the :func:`seen` classes; weighted: the mean weighted by
    support (equal to plain accuracy for recall). All 0.0 for an empty matrix.
    """
    m = per_class(cm)
    idx = seen(cm)
    w = m["support"][idx].astype(np.float64)
    out: dict[str, dict[str, float]] = {"macro": {}, "weighted": {}}
    for k in ("precision", "recall", "f1"):
        v = m[k][idx]
        out["macro"][k] = float(v.mean()) if idx.size else 0.0
        out["weighted"][k] = float((v * w).sum() / w.sum()) if w.sum() > 0 else 0.0
    return out


def most_confused(cm: np.ndarray, k: int = 10) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal cells as ``(true, predicted, count)``: by count, highest
    first, then by true and predicted index (so equal counts always come in the same order)."""
    cm = np.asarray(cm).copy()
    np.fill_diagonal(cm, 0)
    t, p = np.nonzero(cm)
    c = cm[t, p]
    order = np.lexsort((p, t, -c))[:max(0, k)]
    return [(int(t[i]), int(p[i]), int(c[i])) for i in order]

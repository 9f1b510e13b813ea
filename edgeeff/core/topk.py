"""Top-k class indices, the same on every machine: ties go to the lower class index.

``np.argsort(-scores)`` uses an unstable sort (introsort), whose order of equal scores depends
on the CPU's vector code: the same outputs gave a different top-1 on x86 and arm64. int8
models tie often (their scores take few values), so the order must be defined.
"""

from __future__ import annotations

import numpy as np


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores along the last axis, highest first; equal scores in
    ascending index order. Works on one score vector or a batch (``(n, classes)``)."""
    scores = np.asarray(scores)
    n = scores.shape[-1]
    k = max(0, min(k, n))
    if k == 0:
        return np.empty(scores.shape[:-1] + (0,), np.intp)
    # a stable sort of the negated scores keeps equal scores in index order
    if k < n // 8:
        # only the candidates that can be in the top k: those >= the k-th largest score
        kth = -np.partition(-scores, k - 1, axis=-1)[..., k - 1:k]
        if scores.ndim == 1:
            cand = np.flatnonzero(scores >= kth)
            order = np.argsort(-scores[cand], kind="stable")[:k]
            return cand[order]
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]

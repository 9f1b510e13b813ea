"""The cached-feature recipe for pretrained Lite0/1/2 at their own resolution.

It fine-tunes stages 6-7, ``top_conv`` and a new head of the ImageNet-pretrained network with
every BatchNormalization layer in inference mode, so the stages below are a fixed function of
the crop: :mod:`edgeeff.model.features` runs them once per training *view* (centre crop plus
random resized crops), and the epochs train the top on those cached features (AdamW, linear
warm-up then cosine decay, label smoothing, mixup of the features, dropout before the head).
Images are decoded and resized once with the model's :class:`Preprocessor`; validation uses the
centre crop that export, eval and the demo use. Each epoch saves its state (:mod:`.state`).

Under ``--distribute`` the same networks train on full images every epoch in two phases (Keras'
fine-tuning guide: new head on the frozen backbone, then the top stages at a lower rate), with
the numbers of the :class:`Recipe` it is given.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core.arch import ModelSpec, expand
from edgeeff.core.fsutil import atomic_dir, check_out, json_text
from edgeeff.model import features as F
from edgeeff.model.build import build_model
from edgeeff.model.features import FINE_TUNE_FROM
from edgeeff.model.train import state as S
from edgeeff.model.train.data import _datasets, load_split
from edgeeff.model.train.distribute import _fit_multi_worker, is_chief, log_strategy, strategy_for
from edgeeff.model.train.outputs import write_files, write_outputs
from edgeeff.model.train.progress import Phases
from edgeeff.model.train.recipe import Recipe
from edgeeff.model.weights import load_into


def train_cached(data, spec: ModelSpec, weights: str, out, r: Recipe, val_fraction: float,
                 force: bool, log, val_dir, resume: bool, phases: Phases, key: dict) -> dict:
    import keras

    out = check_out(out, force)
    state_dir = S.resume_dir(out)
    state = S.prepare(out, key, resume, force)
    classes, spec, pixels, y, tr, va = load_split(data, val_dir, val_fraction, spec, r.seed,
                                                  phases, log)
    if r.dropout is not None:  # only training sees it; inference has no dropout
        spec = replace(spec, dropout=r.dropout)
    n_tr = len(tr)
    keras.utils.set_random_seed(r.seed)  # dropout too: the same seed trains the same model
    steps_per_epoch = -(-n_tr * r.views // r.batch)
    phases.plan({"load": ("decoding images", len(pixels)),
                 "features": (f"frozen stages 1-{FINE_TUNE_FROM - 1}, {r.views} views",
                              n_tr * r.views + len(va)),
                 "train": (f"stages {FINE_TUNE_FROM}+ and head, {r.epochs} epochs",
                           steps_per_epoch * r.epochs)})
    model = build_model(spec)
    desc = load_into(model, spec, weights, auto_inherit=True)
    head = model.get_layer("predictions")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])  # uniform start
    for layer in model.layers:  # BN in inference mode: the statistics the features came from
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    trunk, top = F.split(model, spec)
    runner = F.TrunkRunner(trunk, images=n_tr * r.views + len(va))
    log(f"features: stages 1-{FINE_TUNE_FROM - 1} frozen, run once per view on {runner.runtime}")
    report = lambda n: phases.report("features", n)  # noqa: E731
    x_val = runner(F.centre(pixels[va], spec.resolution), report)
    sq = pixels[tr]
    del pixels
    feats = None
    for v, view in enumerate(F.views(sq, spec.resolution, r.views, r.seed)):
        f = runner(view, report)
        if feats is None:
            feats = np.empty((r.views * n_tr,) + f.shape[1:], np.float16)
        feats[v * n_tr:(v + 1) * n_tr] = f
    del sq
    y_tr, y_va = np.tile(y[tr], r.views), y[va]
    total = steps_per_epoch * r.epochs
    warm = max(1, int(total * r.warmup))
    sched = keras.optimizers.schedules.CosineDecay(0.0, max(1, total - warm), alpha=0.0,
                                                   warmup_target=r.lr, warmup_steps=warm)
    opt = keras.optimizers.AdamW(sched, weight_decay=r.weight_decay)
    top.compile(optimizer=opt, metrics=["accuracy"],
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=r.label_smoothing))
    train_ds, val_ds = _feature_datasets(feats, y_tr, x_val, y_va, r, len(classes))
    state_dir.mkdir(parents=True, exist_ok=True)
    history, best, best_epoch, start = S.resume_from(state_dir, state, model, opt,
                                                     top.trainable_variables, r.epochs, log)
    if start:
        phases.report("train", start * steps_per_epoch)

    class Checkpoint(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            phases.report("train", 1)

        def on_epoch_end(self, epoch, logs=None):
            nonlocal best, best_epoch
            for k, v in (logs or {}).items():
                history.setdefault(k, []).append(float(v))
            acc = float(logs["val_accuracy"])
            best, best_epoch = S.end_epoch(state_dir, model, opt, key, epoch, history, acc,
                                           best, best_epoch)
            log(f"epoch {epoch + 1}/{r.epochs}: loss {logs['loss']:.4f}, accuracy "
                f"{logs['accuracy']:.4f}, val_accuracy {acc:.4f}"
                f"{' (best)' if best_epoch == epoch + 1 else ''}")

    if start < r.epochs:
        log(f"training stages {FINE_TUNE_FROM}+ and the head: {r.epochs} epochs x "
            f"{steps_per_epoch} steps of {r.batch}, AdamW, warm-up + cosine, lr {r.lr:g}")
        try:
            top.fit(train_ds, validation_data=val_ds, epochs=r.epochs, initial_epoch=start,
                    callbacks=[Checkpoint()], verbose=0, shuffle=False)
        except KeyboardInterrupt:
            log(S.interrupted_line(state_dir, best, best_epoch))
            raise
    model.load_weights(str(state_dir / A.TRAIN_BEST_WEIGHTS))
    result = write_outputs(out, force, model, spec, classes, history, data, desc, n_tr, len(va),
                           best, extra={"best_epoch": best_epoch, "recipe": r.to_dict()})
    shutil.rmtree(state_dir, ignore_errors=True)
    return result | {"chief": True}


def _feature_datasets(feats, y_tr, x_val, y_va, r: Recipe, num_classes: int):
    """Shuffled float32 batches of the cached training features with one-hot labels, mixed
    up when ``r.mixup`` (seeded by ``r.seed``); the validation features in order."""
    import tensorflow as tf

    auto = tf.data.AUTOTUNE

    def prep(x, y):
        return tf.cast(x, tf.float32), tf.one_hot(y, num_classes)

    def mix(batch, seed):
        (x, y) = batch
        g = tf.random.stateless_gamma([2], seed, alpha=r.mixup)
        lam = g[0] / (g[0] + g[1])
        return lam * x + (1 - lam) * x[::-1], lam * y + (1 - lam) * y[::-1]

    train = (tf.data.Dataset.from_tensor_slices((feats, y_tr.astype(np.int32)))
             .shuffle(len(feats), seed=r.seed, reshuffle_each_iteration=True)
             .batch(r.batch).map(prep, num_parallel_calls=auto))
    if r.mixup > 0:
        seeds = tf.data.Dataset.random(seed=r.seed).batch(2)
        train = tf.data.Dataset.zip((train, seeds)).map(mix, num_parallel_calls=auto)
    val = (tf.data.Dataset.from_tensor_slices((x_val, y_va.astype(np.int32))).batch(128)
           .map(prep).cache())
    return train.prefetch(auto), val


def _stage_of_layers(spec: ModelSpec) -> dict[str, int]:
    """Block-name prefix (``block6a_``) -> its stage, from the block table."""
    return {b.name + "_": b.stage for b in expand(spec).blocks}


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
            layer.trainable = stage >= FINE_TUNE_FROM or name.startswith("top_")


def train_cached_distributed(data, spec: ModelSpec, weights: str, out, r: Recipe,
                             val_fraction: float, force: bool, log, val_dir) -> dict:
    """Two phases on full images every epoch (new head at ``r.lr``, then the top stages at
    ``r.lr * r.fine_tune_lr_scale``), under a tf.distribute strategy."""
    import keras

    out = check_out(out, force)
    # the strategy first: MultiWorkerMirroredStrategy must configure collective ops before
    # TensorFlow runs anything (the datasets below would initialise its context)
    strategy = strategy_for(True)
    multi_worker = log_strategy(strategy, log)
    classes, spec, pixels, y, tr, va = load_split(data, val_dir, val_fraction, spec, r.seed,
                                                  Phases(), log)
    train_ds, val_ds = _datasets(pixels[tr], y[tr], pixels[va], y[va], spec.resolution, r.batch,
                                 len(classes), r.seed)
    with strategy.scope():
        model = build_model(spec)
        desc = load_into(model, spec, weights, auto_inherit=True)
        head = model.get_layer("predictions")
        # a new head starts at zero: uniform class scores instead of huge random logits
        head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    head_epochs = max(1, r.epochs // 2)
    history: dict[str, list] = {}
    chief = is_chief()
    if not chief:  # every worker saves (collective ops), but only the chief's files are kept
        out = Path(tempfile.mkdtemp(prefix="edgeeff-worker-")) / "out"
    with atomic_dir(out, force=force) as tmp:
        ckpt = tmp / A.TRAINED_WEIGHTS
        cbs = [keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=r.patience,
                                             restore_best_weights=True),
               keras.callbacks.ModelCheckpoint(str(ckpt), monitor="val_accuracy",
                                               save_best_only=True, save_weights_only=True)]
        saved_best = -1.0  # multi-worker: the checkpointed validation accuracy
        for phase, (fine, lr, n) in enumerate(((False, r.lr, head_epochs),
                                               (True, r.lr * r.fine_tune_lr_scale,
                                                r.epochs - head_epochs))):
            if n <= 0:
                continue
            log(f"phase {phase + 1}: {'fine-tuning the top blocks' if fine else 'new head'}, "
                f"lr {lr:g}, {n} epoch(s) of batch {r.batch}")
            with strategy.scope():
                _freeze(model, spec, fine)
            if multi_worker:
                h, saved_best = _fit_multi_worker(model, strategy, train_ds, val_ds, n, lr,
                                                  r.patience, ckpt, log, saved_best,
                                                  r.label_smoothing)
            else:
                with strategy.scope():
                    model.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"],
                                  loss=keras.losses.CategoricalCrossentropy(
                                      label_smoothing=r.label_smoothing))
                h = model.fit(train_ds, validation_data=val_ds, epochs=n, callbacks=cbs,
                              verbose=2, shuffle=False).history  # tf.data already shuffles
            for k, v in h.items():
                history.setdefault(k, []).extend(float(x) for x in v)
        if ckpt.is_file():
            model.load_weights(str(ckpt))
        val_acc = (history["val_accuracy"][int(np.argmax(history["val_accuracy"]))]
                   if multi_worker else float(model.evaluate(val_ds, verbose=0)[1]))
        result = write_files(tmp, out, model, spec, classes, history, data, desc, len(tr),
                             len(va), val_acc, r.to_dict())
    if not chief:
        shutil.rmtree(out.parent, ignore_errors=True)
        log("non-chief worker: done; the chief writes the outputs")
    result["chief"] = chief
    result["recipe"] = r.to_dict()
    log(json_text({k: v for k, v in result.items() if k != "classes"}))
    return result


"""``edgeeff train``: transfer learning on a folder of images (one sub-folder per class).

The default recipe fine-tunes stages 6-7, ``top_conv`` and a new head of an ImageNet-pretrained
network with every BatchNormalization layer in inference mode, so the stages below are a fixed
function of the crop: :mod:`edgeeff.model.features` runs them once per training *view* (centre
crop plus random resized crops), and the epochs train the top on those cached features
(AdamW, linear warm-up then cosine decay, label smoothing, mixup of the features, dropout 0.5
before the head). Images are decoded and resized once with the model's :class:`Preprocessor`;
validation uses the centre crop that export, eval and the demo use. Each epoch saves its state
to ``OUT.resume/`` (``--resume`` continues there; Ctrl-C keeps it); the output folder, written
at once at the end, holds ``model.keras``, ``model.weights.h5`` (the best validation epoch),
``labels.txt``, ``history.json`` (+ ``history.png`` with matplotlib) and ``edgeeff.json``, a spec
file that ``export`` takes directly.

``--distribute`` keeps the two-phase recipe on full images every epoch (Keras' fine-tuning guide:
new head on the frozen backbone, then the top stages at a 10x lower rate) under tf.distribute.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core import specfile
from edgeeff.core.arch import ModelSpec, expand
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import (
    atomic_dir,
    check_out,
    finite_or_none,
    json_text,
    write_json_atomic,
    write_text_atomic,
)
from edgeeff.core.preprocess import Preprocessor
from edgeeff.data.folder import ImageFolder
from edgeeff.data.images import load_rgb, resize_crop, unreadable_note
from edgeeff.device.profile.host import usable_cores
from edgeeff.model import features as F
from edgeeff.model.build import build_model
from edgeeff.model.features import FINE_TUNE_FROM
from edgeeff.model.weights import load_into


def folder_dataset(data: str | Path, val_fraction: float, seed: int = 0,
                   val_dir: str | Path | None = None):
    """A class-folder dataset's class names and its (train, validation) files and labels:
    with ``val_dir``, that folder (same class names) is the validation set; else
    :meth:`ImageFolder.split <edgeeff.data.folder.ImageFolder.split>` holds ``val_fraction``
    of every class out for validation (at least one image of each class that has two or
    more); each set is in file order."""
    folder = ImageFolder(data, min_classes=2)
    classes = folder.classes()
    label = {s.path: s.label for s in folder.samples()}
    if val_dir is not None:
        vfolder = ImageFolder(val_dir)
        extra = sorted(set(vfolder.classes()) - set(classes))
        if extra:
            raise EdgeeffError(f"--val {val_dir}: class folder(s) {', '.join(extra[:5])} "
                               f"are not in --data {data}")
        vs = vfolder.samples(classes)
        files = sorted(label)
        return classes, (files, [label[p] for p in files]), \
            ([s.path for s in vs], [s.label for s in vs])
    kept, held = folder.split(val_fraction, seed)
    sets = []
    for queues in (kept, held):
        files = sorted(p for q in queues for p in q)
        sets.append((files, [label[p] for p in files]))
    return classes, sets[0], sets[1]


def load_pixels(files: list[Path], pp: Preprocessor,
                progress=None) -> tuple[np.ndarray, list[int]]:
    """uint8 RGB images resized as ``pp`` does, keeping the whole ``pp.shorter_side`` centre
    square (random training crops come from it; its centre ``pp.resolution`` crop is the
    evaluation crop). Decoded on every core (OpenCV releases the GIL)."""
    def one(p):
        img = load_rgb(p)
        return None if img is None else resize_crop(img, pp, crop=pp.shorter_side)

    out, ok = [], []
    with ThreadPoolExecutor(max(1, min(8, usable_cores()))) as ex:
        for i, sq in enumerate(ex.map(one, files)):
            if progress:
                progress(1)
            if sq is not None:
                out.append(sq)
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
            layer.trainable = stage >= FINE_TUNE_FROM or name.startswith("top_")


@dataclass(frozen=True)
class Recipe:
    """The default (cached-feature) recipe; README "Transfer learning" says why each value.

    ``epochs`` are passes over all ``views`` of every training image; the best validation epoch
    is kept. The learning rate warms up linearly over the first ``warmup`` of the steps, then
    follows a cosine to zero.
    ``mixup`` is the Beta(a, a) parameter of mixup on the cached features (manifold mixup at
    the input of the first fine-tuned stage; 0: off): every batch is blended with itself
    reversed, labels likewise.
    ``dropout`` replaces the spec's rate before the new head (ImageNet training's 0.2 for
    Lite0): a few thousand photos overfit a 1,280-wide head sooner than a million do.
    """

    epochs: int = 2
    views: int = 4
    batch: int = 64
    lr: float = 1e-3
    warmup: float = 0.1
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    mixup: float = 0.2
    dropout: float = 0.5
    seed: int = 0


def resume_dir(out: str | Path) -> Path:
    """Where an unfinished run keeps its state: ``OUT.resume/`` beside ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


class Phases:
    """Progress of a training run by phase (``load``, ``features``, ``train``), each with its
    number of units; ``report(phase, n)`` is called as units finish. The CLI draws bars with
    ETAs from it; the default does nothing."""

    def plan(self, phases: dict[str, tuple[str, int]]) -> None:  # noqa: B027 - optional hook
        pass

    def report(self, phase: str, n: int = 1) -> None:  # noqa: B027 - optional hook
        pass


def _config_key(data, val, spec: ModelSpec, weights: str, r: Recipe) -> dict:
    return {"data": str(Path(data).resolve()), "val": str(Path(val).resolve()) if val else None,
            "spec": asdict(spec),
            "weights": weights, "recipe": asdict(r)}


def _save_state(state_dir: Path, model, opt, state: dict) -> None:
    """Last epoch's weights, optimizer slots and history, each file replaced atomically, the
    state file last (it names a consistent set)."""
    tmp_w = state_dir / ("." + A.TRAIN_LAST_WEIGHTS)
    model.save_weights(str(tmp_w))
    os.replace(tmp_w, state_dir / A.TRAIN_LAST_WEIGHTS)
    tmp_o = state_dir / ("." + A.TRAIN_OPTIMIZER)
    with open(tmp_o, "wb") as f:
        np.savez(f, *[np.asarray(v) for v in opt.variables])
    os.replace(tmp_o, state_dir / A.TRAIN_OPTIMIZER)
    write_json_atomic(state_dir / A.TRAIN_STATE, finite_or_none(state))  # NaN loss: null


def train(data: str, spec: ModelSpec, weights: str, out: str | Path, epochs: int | None = None,
          batch: int | None = None, val_fraction: float = 0.2, patience: int = 3,
          distribute: bool = False, force: bool = False, log=print, val_dir: str | None = None,
          resume: bool = False, views: int | None = None, seed: int = 0,
          phases: Phases | None = None) -> dict:
    """Fine-tune ``spec`` on a class-folder dataset; writes ``out`` (see the module docstring).

    Without ``distribute``: the cached-feature recipe (:class:`Recipe`, :mod:`features`),
    resumable (``resume``) and interruptible (Ctrl-C keeps the state in :func:`resume_dir`).
    With ``distribute``: the two-phase tf.distribute recipe on full images, every epoch.
    """
    if epochs is not None and epochs < 1:
        raise EdgeeffError("--epochs must be >= 1")
    if distribute:
        if resume:
            raise EdgeeffError("--resume works without --distribute only")
        return _train_full(data, spec, weights, out, epochs or 10, batch or 32, val_fraction,
                           patience, distribute, force, log, val_dir)
    r = Recipe(**{k: v for k, v in (("epochs", epochs), ("batch", batch), ("views", views),
                                    ("seed", seed)) if v is not None})
    return _train_cached(data, spec, weights, out, r, val_fraction, force, log, val_dir, resume,
                         phases or Phases())


def load_split(data, val_dir, val_fraction, spec, seed, phases, log):
    """Class names, ``spec`` with their number, every image decoded once as ``spec``'s
    squares, their labels, and the indices of the training and of the validation images."""
    classes, (tr_files, tr_labels), (va_files, va_labels) = folder_dataset(
        data, val_fraction, seed, val_dir)
    spec = replace(spec, num_classes=len(classes))
    if not va_files:
        raise EdgeeffError("too few images for a validation split (need 2+ in some class)")
    phases.report("load", 0)
    pixels, ok = load_pixels(tr_files + va_files, F.preprocessor(spec),
                             progress=lambda n: phases.report("load", n))
    skipped = len(tr_files) + len(va_files) - len(ok)
    if skipped:
        log(unreadable_note(skipped, data if val_dir is None else f"{data} and {val_dir}"))
    y = np.array(tr_labels + va_labels)[ok]
    is_val = np.array(ok) >= len(tr_files)
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if not len(va):
        raise EdgeeffError("no readable validation images")
    src = f"--val {val_dir}" if val_dir else f"{val_fraction:.0%} of --data"
    log(f"train: {len(tr)} images, validation: {len(va)} images ({src}), {len(classes)} classes")
    return classes, spec, pixels, y, tr, va


def _train_cached(data, spec: ModelSpec, weights: str, out, r: Recipe, val_fraction: float,
                  force: bool, log, val_dir, resume: bool, phases: Phases) -> dict:
    import keras

    out = check_out(out, force)
    state_dir = resume_dir(out)
    key = _config_key(data, val_dir, spec, weights, r)
    state = None
    if resume:
        try:
            state = json.loads((state_dir / A.TRAIN_STATE).read_text())
        except (OSError, ValueError):
            raise EdgeeffError(f"nothing to resume: {state_dir} holds no interrupted run") from None
        if state.get("config") != key:
            raise EdgeeffError(f"--resume: {state_dir} is a run with other data, model or "
                               "settings; start over with --force")
    elif (state_dir / A.TRAIN_STATE).is_file():
        if not force:
            raise EdgeeffError(f"{state_dir} holds an interrupted run: continue it with "
                               "--resume, or start over with --force")
        shutil.rmtree(state_dir)
    else:  # stopped before its first epoch: nothing worth keeping
        shutil.rmtree(state_dir, ignore_errors=True)
    classes, spec, pixels, y, tr, va = load_split(data, val_dir, val_fraction, spec, r.seed, phases,
                                             log)
    spec = replace(spec, dropout=r.dropout)  # only training sees it; inference has no dropout
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
    runner = F.TrunkRunner(trunk)
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
    history: dict[str, list] = {}
    best, best_epoch, start = -1.0, 0, 0
    state_dir.mkdir(parents=True, exist_ok=True)
    if state is not None:
        model.load_weights(str(state_dir / A.TRAIN_LAST_WEIGHTS))
        opt.build(top.trainable_variables)
        with np.load(state_dir / A.TRAIN_OPTIMIZER) as z:
            for var, i in zip(opt.variables, range(len(z.files))):
                var.assign(z[f"arr_{i}"])
        history, best, best_epoch, start = (state["history"], state["best"],
                                            state["best_epoch"], state["epoch"])
        phases.report("train", start * steps_per_epoch)
        log(f"resumed after epoch {start} of {r.epochs} (best val_accuracy {best:.4f})")

    class Checkpoint(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            phases.report("train", 1)

        def on_epoch_end(self, epoch, logs=None):
            nonlocal best, best_epoch
            for k, v in (logs or {}).items():
                history.setdefault(k, []).append(float(v))
            acc = float(logs["val_accuracy"])
            if acc > best:
                best, best_epoch = acc, epoch + 1
                model.save_weights(str(state_dir / ("." + A.TRAIN_BEST_WEIGHTS)))
                os.replace(state_dir / ("." + A.TRAIN_BEST_WEIGHTS), state_dir / A.TRAIN_BEST_WEIGHTS)
            _save_state(state_dir, model, opt, {"config": key, "epoch": epoch + 1,
                                                "history": history, "best": best,
                                                "best_epoch": best_epoch})
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
            done = "no epoch finished" if best < 0 else \
                f"best val_accuracy {best:.4f} (epoch {best_epoch}) kept"
            log(f"interrupted: {done} in {state_dir}/; continue with --resume")
            raise
    model.load_weights(str(state_dir / A.TRAIN_BEST_WEIGHTS))
    val_acc = best
    result = _write_outputs(out, force, model, spec, classes, history, data, desc, n_tr, len(va),
                            val_acc, extra={"best_epoch": best_epoch, "recipe": asdict(r)})
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


def _write_outputs(out, force, model, spec, classes, history, data, desc, n_tr, n_va, val_acc,
                   extra=None) -> dict:
    """:func:`_write_files` into ``out``, all at once (:func:`atomic_dir`)."""
    with atomic_dir(out, force=force) as tmp:
        result = _write_files(tmp, out, model, spec, classes, history, data, desc, n_tr, n_va,
                              val_acc)
    return result | (extra or {})


def _write_files(tmp: Path, out, model, spec, classes, history, data, desc, n_tr, n_va,
                 val_acc) -> dict:
    """model.keras, model.weights.h5, labels.txt, history.json and edgeeff.json into ``tmp``
    (the folder that becomes ``out``); returns the figures recorded in the spec file."""
    for layer in model.layers:
        layer.trainable = True
    model.save(str(tmp / A.TRAINED_KERAS))
    model.save_weights(str(tmp / A.TRAINED_WEIGHTS))
    write_text_atomic(tmp / A.LABELS, "\n".join(classes) + "\n")
    write_json_atomic(tmp / A.TRAIN_HISTORY, finite_or_none(history))  # NaN loss: null
    result = {"classes": classes, "train_images": int(n_tr), "val_images": int(n_va),
              "val_accuracy": round(val_acc, 4), "weights_from": desc,
              "top1": round(100 * val_acc, 2),
              "top1_basis": f"measured by edgeeff train on {n_va} validation images",
              "epochs_run": len(history.get("loss", []))}
    specfile.write(tmp / A.SPEC_FILE, specfile.SpecFile(spec, trained=specfile.Trained(
        **result, weights=A.TRAINED_WEIGHTS, labels=A.LABELS,
        crop_fraction=F.TRAIN_CROP_FRACTION,
        # relative to this spec file: resolves from any working directory
        data=os.path.relpath(Path(data).resolve(), Path(out).resolve()))))
    return result


def _train_full(data, spec: ModelSpec, weights: str, out, epochs: int, batch: int,
                val_fraction: float, patience: int, distribute: bool, force: bool, log,
                val_dir) -> dict:
    """Two phases on full images every epoch (new head, then the top stages at a 10x lower
    rate), under a tf.distribute strategy."""
    import keras

    out = check_out(out, force)
    # the strategy first: MultiWorkerMirroredStrategy must configure collective ops before
    # TensorFlow runs anything (the datasets below would initialise its context)
    strategy = _strategy(distribute)
    multi_worker = distribute and bool(os.environ.get("TF_CONFIG"))
    name = "MultiWorkerMirroredStrategy" if multi_worker else type(strategy).__name__
    log(f"strategy: {name}, {strategy.num_replicas_in_sync} replicas in sync")
    classes, spec, pixels, y, tr, va = load_split(data, val_dir, val_fraction, spec, 0, Phases(),
                                                 log)
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
        val_acc = (history["val_accuracy"][int(np.argmax(history["val_accuracy"]))]
                   if multi_worker else float(model.evaluate(val_ds, verbose=0)[1]))
        result = _write_files(tmp, out, model, spec, classes, history, data, desc, len(tr),
                              len(va), val_acc)
    if not chief:
        shutil.rmtree(out.parent, ignore_errors=True)
        log("non-chief worker: done; the chief writes the outputs")
    result["chief"] = chief
    log(json_text({k: v for k, v in result.items() if k != "classes"}))
    return result

"""The distilled recipe for networks without weights of their own (every spec that is not a
pretrained Lite0/1/2 at its own resolution: microcontroller picks, sizes above Lite2, a
pretrained architecture at another resolution).

Every layer trains, BatchNormalization in training mode, from the inherited initialisation
(:mod:`edgeeff.model.inherit`: Lite0's ImageNet weights sliced to the spec). The training set
is ``views`` fixed views of every photo and the teacher's outputs on them, computed once
(:mod:`.distill`) and kept in ``OUT.resume/`` so a resumed run does not recompute them; each
epoch is one shuffled pass over them with the loss
``alpha * KL(teacher_T || student_T) * T^2 + (1 - alpha) * CE(smoothed label)``, AdamW with
linear warm-up and cosine decay. Validation (the centre crop export, eval and the demo use)
picks the epoch kept. One plain training loop serves one host and tf.distribute alike (Keras
3's ``fit`` cannot run under MultiWorkerMirroredStrategy); every worker computes the same
seeded views and teacher outputs and trains on its share of every global batch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core.arch import ModelSpec
from edgeeff.core.fsutil import check_out, json_text
from edgeeff.model import features as F
from edgeeff.model.build import build_model
from edgeeff.model.train import distill as D
from edgeeff.model.train import state as S
from edgeeff.model.train.data import folder_dataset, load_sets
from edgeeff.model.train.distribute import is_chief, log_strategy, strategy_for
from edgeeff.model.train.outputs import write_outputs
from edgeeff.model.train.progress import Phases
from edgeeff.model.train.recipe import Recipe
from edgeeff.model.weights import load_into


def kd_loss(logits, teacher_logp, onehot, r: Recipe):
    """Per-example ``alpha * KL(teacher_T || student_T) * T^2 + (1 - alpha) * CE(smoothed)``
    (student logits, teacher log-probabilities, one-hot labels)."""
    import tensorflow as tf

    t = r.temperature
    logits = tf.cast(logits, tf.float32)
    pt_log = tf.nn.log_softmax(tf.cast(teacher_logp, tf.float32) / t)
    ps_log = tf.nn.log_softmax(logits / t)
    kl = tf.reduce_sum(tf.exp(pt_log) * (pt_log - ps_log), -1) * t * t
    k = tf.cast(tf.shape(onehot)[-1], tf.float32)
    smooth = onehot * (1.0 - r.label_smoothing) + r.label_smoothing / k
    ce = -tf.reduce_sum(smooth * tf.nn.log_softmax(logits), -1)
    return r.alpha * kl + (1.0 - r.alpha) * ce


def bn_momentum(total_steps: int, default: float = 0.99) -> float:
    """BatchNorm's moving-average momentum for a run of ``total_steps``: the builder's 0.99
    (a window of about 100 steps), shortened to a tenth of the run when the run is short, so
    the statistics inference uses are those of the trained weights, not the inherited ones."""
    return float(min(default, max(0.5, 1.0 - 10.0 / max(1, total_steps))))


def _views_cached(state_dir: Path, n: int):
    """The views and teacher outputs an interrupted run saved, if they are there."""
    try:
        x = np.load(state_dir / "views.npy", mmap_mode=None)
        t = np.load(state_dir / "teacher.npy")
    except (OSError, ValueError):
        return None
    return (x, t) if len(x) == len(t) == n else None


def _save_views(state_dir: Path, x: np.ndarray, t: np.ndarray) -> None:
    for name, a in (("views.npy", x), ("teacher.npy", t)):
        tmp = state_dir / f".{name}"
        with open(tmp, "wb") as f:
            np.save(f, a)
        os.replace(tmp, state_dir / name)


def _student(spec: ModelSpec, weights: str, r: Recipe, total: int):
    """(student, optimizer, weights' description): ``spec`` built with logits out (the loss's
    softmax), every layer from ``weights`` (the inherited initialisation where it has none of
    its own), a zeroed head (a uniform start), BatchNorm's momentum for a run of ``total``
    steps, AdamW with linear warm-up and a cosine to zero over them. Built in the caller's
    distribution scope."""
    import keras

    student = build_model(spec, classifier_activation=None)
    desc = load_into(student, spec, weights, auto_inherit=True)
    head = student.get_layer("predictions")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    momentum = bn_momentum(total)
    for layer in student.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    warm = max(1, int(total * r.warmup))
    sched = keras.optimizers.schedules.CosineDecay(0.0, max(1, total - warm), alpha=0.0,
                                                   warmup_target=r.lr, warmup_steps=warm)
    opt = keras.optimizers.AdamW(sched, weight_decay=r.weight_decay)
    opt.build(student.trainable_variables)
    return student, opt, desc


def _step_functions(student, opt, r: Recipe, num_classes: int, strategy):
    """(train_step(views, teacher log-probabilities, labels) -> loss, predict(images) ->
    classes) as tf.functions; the step runs on every replica of ``strategy``."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def train_step(x, t, y):
        def step(x, t, y):
            with tf.GradientTape() as tape:
                logits = student(tf.cast(x, tf.float32), training=True)
                per = kd_loss(logits, t, tf.one_hot(y, num_classes), r)
                loss = tf.nn.compute_average_loss(per, global_batch_size=r.batch)
            grads = tape.gradient(loss, student.trainable_variables)
            opt.apply(grads, student.trainable_variables)
            return loss

        return strategy.reduce("SUM", strategy.run(step, args=(x, t, y)), axis=None)

    @tf.function(reduce_retracing=True)
    def predict(x):
        return tf.argmax(student(tf.cast(x, tf.float32), training=False), -1)

    if strategy.num_replicas_in_sync == 1:  # plain tensors in; per-replica values otherwise
        train_step = _any_batch(train_step)
    return train_step, _any_batch(predict)


def _any_batch(fn):
    """``fn`` (a tf.function of arrays) traced once for every batch size: its first call
    traces it with the batch dimension left open, so a last, smaller batch reuses that trace
    instead of tracing the network's step (its gradients, for training) a second time."""
    import tensorflow as tf

    traced = []

    def call(*args):
        if not traced:
            fn.get_concrete_function(*[tf.TensorSpec([None, *a.shape[1:]], a.dtype)
                                       for a in args])
            traced.append(True)
        return fn(*args)

    return call


def _predicted(predict, x: np.ndarray) -> np.ndarray:
    return np.concatenate([predict(x[i:i + 128]).numpy() for i in range(0, len(x), 128)])


def proxy_hits(spec: ModelSpec, weights: str, x: np.ndarray, t: np.ndarray, y: np.ndarray,
               x_val: np.ndarray, y_val: np.ndarray, r: Recipe) -> list[bool]:
    """``tune``'s cheap ranking of one network without weights of its own: every layer of
    ``spec`` trained as :func:`train_distill` trains it (same initialisation, loss, optimiser
    and schedule), for ``r.epochs`` shuffled passes over the given views ``x`` (uint8, at the
    spec's resolution), the teacher's log-probabilities ``t`` on them and their labels ``y``,
    computed once by the caller and shared by every candidate; then, per validation image
    (``x_val``, ``y_val``), whether the last epoch's weights classify it right. Writes nothing."""
    import keras
    import tensorflow as tf

    if r.dropout is not None:
        spec = replace(spec, dropout=r.dropout)
    keras.utils.set_random_seed(r.seed)
    total = -(-len(x) // r.batch) * r.epochs
    student, opt, _ = _student(spec, weights, r, total)
    train_step, predict = _step_functions(student, opt, r, spec.num_classes,
                                          tf.distribute.get_strategy())
    for epoch in range(r.epochs):
        order = np.random.default_rng([r.seed, 1000 + epoch]).permutation(len(x))
        for s in range(0, len(order), r.batch):
            idx = np.sort(order[s:s + r.batch])
            train_step(tf.constant(x[idx]), tf.constant(t[idx]), tf.constant(y[idx]))
    return [bool(h) for h in _predicted(predict, x_val) == y_val]


def train_distill(data, spec: ModelSpec, weights: str, out, r: Recipe, val_fraction: float,
                  force: bool, log, val_dir, resume: bool, phases: Phases, key: dict,
                  teacher_for, distribute: bool = False) -> dict:
    """Train ``spec`` with the distilled recipe ``r``; ``teacher_for(classes, files,
    val_files)`` returns the (:class:`~.distill.Teacher`, :class:`~.distill.TeacherInfo`)."""
    import keras
    import tensorflow as tf

    out = check_out(out, force)
    strategy = strategy_for(True) if distribute else tf.distribute.get_strategy()
    if distribute:
        log_strategy(strategy, log)
    chief = not distribute or is_chief()
    state_dir = S.resume_dir(out) if chief else Path(tempfile.mkdtemp(prefix="edgeeff-worker-"))
    state = S.prepare(out, key, resume, force) if chief else None
    classes, (files, y_files), (val_files, y_val_files) = folder_dataset(data, val_fraction,
                                                                         r.seed, val_dir)
    teacher, tinfo = teacher_for(classes, files, val_files)
    spec = replace(spec, num_classes=len(classes))
    if r.dropout is not None:
        spec = replace(spec, dropout=r.dropout)
    side = max(teacher.resolution, spec.resolution)
    t_pp = F.preprocessor(replace(spec, resolution=side))
    src = f"--val {val_dir}" if val_dir else f"{val_fraction:.0%} of --data"
    sq, y_tr, x_val, y_va = load_sets(files, y_files, val_files, y_val_files, t_pp,
                                      F.preprocessor(spec), src, log)
    n_tr = len(sq)
    steps = -(-n_tr * r.views // r.batch)
    phases.plan({"load": ("decoding images", n_tr + len(x_val)),
                 "views": (f"teacher {tinfo.name} on {r.views} views at {teacher.resolution} px",
                           n_tr * r.views),
                 "train": (f"every layer, {r.epochs} epochs", steps * r.epochs)})
    state_dir.mkdir(parents=True, exist_ok=True)
    cached = _views_cached(state_dir, n_tr * r.views) if state is not None else None
    t0 = time.perf_counter()
    if cached is None:
        teacher.expect(n_tr * r.views)
        log(f"views: {r.views} per photo (centre + random crops of "
            f"{r.crop_scale[0]:.0%}-{r.crop_scale[1]:.0%} of the square, mirrors), the teacher "
            f"once per view at {teacher.resolution} px on {teacher.runner.runtime}")
        x_tr, t_tr = D.teacher_views(sq, spec.resolution, teacher, r.views, r.seed, r.crop_scale,
                                     lambda n: phases.report("views", n))
        if chief:
            _save_views(state_dir, x_tr, t_tr)
        views_s = round(time.perf_counter() - t0, 1)
        log(f"views: {len(x_tr)} views and their teacher outputs in {views_s / 60:.1f} min")
    else:
        x_tr, t_tr = cached
        views_s = 0.0
        phases.report("views", n_tr * r.views)
        log(f"views: {len(x_tr)} views and teacher outputs reused from {state_dir}")
    del sq
    y_views = np.tile(y_tr, r.views).astype(np.int32)

    keras.utils.set_random_seed(r.seed)  # init of new layers, dropout
    total = steps * r.epochs
    with strategy.scope():
        student, opt, desc = _student(spec, weights, r, total)
    n_rep = strategy.num_replicas_in_sync
    train_step, predict = _step_functions(student, opt, r, len(classes), strategy)

    def val_accuracy() -> float:
        return float(np.mean(_predicted(predict, x_val) == y_va))

    def shards(*arrays):
        if n_rep == 1:
            return tuple(tf.constant(a) for a in arrays)
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tuple(tf.constant(a[ctx.replica_id_in_sync_group::n_rep])
                              for a in arrays))

    history, best, best_epoch, start = S.resume_from(state_dir, state, student, opt,
                                                     student.trainable_variables, r.epochs, log)
    if start:
        phases.report("train", start * steps)
    log(f"training every layer: {r.epochs} epochs x {steps} steps of {r.batch} over "
        f"{len(x_tr)} views, AdamW (weight decay {r.weight_decay:g}), warm-up + cosine from "
        f"lr {r.lr:g}; loss {r.alpha:g} x KL at T={r.temperature:g} + {1 - r.alpha:g} x "
        f"CE (smoothing {r.label_smoothing:g})")
    t_train = time.perf_counter()
    try:
        for epoch in range(start, r.epochs):
            order = np.random.default_rng([r.seed, 1000 + epoch]).permutation(len(x_tr))
            losses = []
            for s in range(0, len(order), r.batch):
                idx = np.sort(order[s:s + r.batch])
                if len(idx) < n_rep:
                    continue
                losses.append(float(train_step(*shards(x_tr[idx], t_tr[idx], y_views[idx]))))
                phases.report("train", 1)
            acc = val_accuracy()
            history.setdefault("loss", []).append(float(np.mean(losses)))
            history.setdefault("val_accuracy", []).append(acc)
            best, best_epoch = S.end_epoch(state_dir, student, opt, key, epoch, history, acc,
                                           best, best_epoch)
            log(f"epoch {epoch + 1}/{r.epochs}: loss {history['loss'][-1]:.4f}, "
                f"val_accuracy {acc:.4f}{' (best)' if best_epoch == epoch + 1 else ''}")
    except KeyboardInterrupt:
        log(S.interrupted_line(state_dir, best, best_epoch))
        raise
    train_s = round(time.perf_counter() - t_train, 1)
    student.load_weights(str(state_dir / A.TRAIN_BEST_WEIGHTS))
    model = build_model(spec)  # the same layers, softmax on top: what export and eval take
    model.set_weights(student.get_weights())
    extra = {"best_epoch": best_epoch, "recipe": r.to_dict(), "teacher": tinfo.to_dict(),
             "views_seconds": views_s, "train_seconds": train_s,
             "teacher_images_run": teacher.images_run}
    if chief:
        result = write_outputs(out, force, model, spec, classes, history, data, desc, n_tr,
                               len(x_val), best, extra=extra)
    else:
        result = {"val_accuracy": round(best, 4), "val_images": len(x_val), **extra}
        log("non-chief worker: done; the chief writes the outputs")
    shutil.rmtree(state_dir, ignore_errors=True)
    if distribute:
        log(json_text({k: v for k, v in result.items() if k != "classes"}))
    return result | {"chief": chief}


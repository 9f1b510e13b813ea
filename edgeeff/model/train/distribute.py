"""tf.distribute for training: the strategy, which worker keeps the outputs, and a plain
training loop for MultiWorkerMirroredStrategy (where Keras 3's ``fit`` cannot run)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgeeff.core.errors import EdgeeffError


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


def strategy_for(distribute: bool):
    import tensorflow as tf

    if not distribute:
        return tf.distribute.get_strategy()
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def _fit_multi_worker(model, strategy, train_ds, val_ds, epochs: int, lr: float,
                      patience: int, ckpt: Path, log, saved_best: float = -1.0,
                      label_smoothing: float = 0.1) -> tuple[dict[str, list], float]:
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
        loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                       reduction="none")
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


def log_strategy(strategy, log) -> bool:
    """Logs the strategy and its replicas; True under MultiWorkerMirroredStrategy."""
    multi_worker = bool(os.environ.get("TF_CONFIG"))
    name = "MultiWorkerMirroredStrategy" if multi_worker else type(strategy).__name__
    log(f"strategy: {name}, {strategy.num_replicas_in_sync} replicas in sync")
    return multi_worker

"""Loading a model's weights as ``--weights`` (:class:`~edgeeff.core.zoo.WeightsChoice`) says."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from edgeeff.core.arch import ModelSpec
from edgeeff.core.errors import EdgeeffError, RandomWeightsWarning
from edgeeff.core.fsutil import raise_if_interrupted
from edgeeff.core.zoo import WeightsChoice
from edgeeff.model import inherit, pretrained

__all__ = ["RandomWeightsWarning", "load_into", "load_keras_weights"]


def load_into(model, spec: ModelSpec, weights: str | WeightsChoice | None,
              auto_inherit: bool = False) -> str:
    """Fill ``model``'s weights as ``weights`` (a :class:`~edgeeff.core.zoo.WeightsChoice`, or
    the ``--weights`` text it is parsed from) says; returns a short description for the model
    card.

    ``auto`` means ImageNet weights where the architecture has them (and the
    ``edgeeff[pretrained]`` extra is installed), else random initialisation; with
    ``auto_inherit`` (what ``train`` asks for: a starting point for fine-tuning), weights
    inherited from the nearest pretrained Lite0/1/2 (``inherit``,
    :mod:`edgeeff.model.inherit`) for the lite family before falling back to random.
    """
    choice = WeightsChoice.parse(weights)
    kind = choice.kind
    if kind == "auto":
        kind = ("imagenet" if pretrained.available_for(spec)
                else "inherit" if auto_inherit and inherit.can_inherit(spec) else "none")
    if kind == "inherit":
        return inherit.inherit_into(model, spec)
    if kind == "none":
        warnings.warn("--weights none: random initialisation, predictions are MEANINGLESS "
                      "(use --weights imagenet or a trained checkpoint for a real model)",
                      RandomWeightsWarning, stacklevel=2)
        return "none"
    if kind == "imagenet":
        return pretrained.load_imagenet(model, spec)
    weights = choice.path
    p = Path(weights)
    if not p.is_file():
        raise EdgeeffError(f"weights file not found: {weights}")
    try:
        if p.name.endswith(".weights.h5"):
            load_keras_weights(model, p)
        else:
            model.load_weights(str(p))
    except EdgeeffError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here is the user's file
        raise_if_interrupted()
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EdgeeffError(f"cannot load weights from {weights}: {msg[:200]}") from None
    return f"file {p.name}"


def _snake(name: str) -> str:
    """Keras' class-name -> key rule (Conv2D -> conv2d, BatchNormalization -> batch_normalization)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def load_keras_weights(model, path: Path) -> int:
    """Load a Keras 3 ``.weights.h5`` (keras.applications' EfficientNetB0-B7 or edgeeff's own).

    Keras 3 files key each layer by its class and position (``conv2d_5``,
    ``batch_normalization_12``), not by its name, so the keys are recomputed for this model's
    layers in order. The two graphs list their convolution, BatchNorm, depthwise and dense
    layers in the same order (same block table, same Keras-applications layer names), so each
    key lands on the layer of the same name. A Normalization layer's mean/variance in the file
    (keras.applications' input normalisation) replaces this model's input normalisation.
    Returns the number of layers loaded.
    """
    import h5py  # comes with TensorFlow

    with h5py.File(path, "r") as f:
        if "layers" not in f:
            raise EdgeeffError(f"{path}: not a Keras 3 .weights.h5 file (no 'layers' group)")
        groups = f["layers"]
        counters: dict[str, int] = {}
        loaded = 0
        for layer in model.layers:
            base = _snake(type(layer).__name__)
            n = counters.get(base, -1) + 1
            counters[base] = n
            key = base if n == 0 else f"{base}_{n}"
            if not layer.weights:
                continue
            if key not in groups or "vars" not in groups[key]:
                raise EdgeeffError(f"{path}: no weights for layer {layer.name} ({key}); "
                                   "was it saved from a model of the same spec?")
            vars_ = groups[key]["vars"]
            arrays = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
            expected = [tuple(w.shape) for w in layer.weights]
            if [a.shape for a in arrays] != expected:
                raise EdgeeffError(f"{path}: layer {layer.name} ({key}) has shapes "
                                   f"{[a.shape for a in arrays]}, the model wants {expected}")
            layer.set_weights(arrays)
            loaded += 1
        if "normalization" in groups and "vars" in groups["normalization"]:
            v = groups["normalization"]["vars"]
            mean, var = np.asarray(v["0"]).ravel(), np.asarray(v["1"]).ravel()
            std = np.sqrt(np.maximum(var, 1e-7))
            norm = model.get_layer("normalization")  # x/255, then (x - mean) / std
            norm.scale = (1.0 / (255.0 * std)).astype("float32").tolist()
            norm.offset = (-mean / std).astype("float32").tolist()
    return loaded

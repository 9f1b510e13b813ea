"""The export pipeline's input: a model, how pixels reach it, and where it came from.

Built from a :class:`~edgeeff.core.arch.ModelSpec` here (:func:`from_spec`), or imported from
ONNX (:func:`edgeeff.export.onnx.load`); every later step takes a :class:`Frontend` and does not
care which.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from edgeeff.core.arch import ModelSpec
from edgeeff.core.errors import RandomWeightsWarning
from edgeeff.core.preprocess import Preprocessor
from edgeeff.model.build import build_model
from edgeeff.model.weights import load_into

if TYPE_CHECKING:
    import keras


@dataclass
class Frontend:
    """What the converters need, whether the model was built from a spec or imported."""

    name: str
    num_classes: int
    model: keras.Model | str  # a Keras model, or a SavedModel folder (ONNX imports)
    preprocessor: Preprocessor  # how pixels reach ``model``
    weights: str  # what the weights are, for the model card
    spec: ModelSpec | None = None  # when built by edgeeff
    source: dict = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return self.preprocessor.resolution


def from_spec(spec: ModelSpec, weights: str, log=print,
              crop_fraction: float | None = None) -> Frontend:
    """Build ``spec`` once, load its weights, and derive the int8 graph variant;
    ``crop_fraction``: a trained model's own evaluation crop (its spec file's)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        model = build_model(spec, training_dropout=False)
        desc = load_into(model, spec, weights)
    for w in caught:
        log(f"WARNING: {w.message}")
    pp = Preprocessor.for_spec(spec, normalized=False)
    if Preprocessor.folds_into_input(spec):
        # one affine normalisation: the TFLite models take the normalised image, and the int8
        # one carries it in its uint8 input's quantisation (raw pixels in, no extra ops)
        bare = build_model(spec, include_preprocessing=False, training_dropout=False)
        bare.set_weights(model.get_weights())
        model, pp = bare, Preprocessor.for_spec(spec, normalized=True)
    if crop_fraction is not None:
        pp = replace(pp, crop_fraction=float(crop_fraction))
    return Frontend(name=spec.name, num_classes=spec.num_classes, model=model, preprocessor=pp,
                    weights=desc, spec=spec, source={"built_from": "spec"})

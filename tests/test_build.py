"""The Keras builder against the analytic cost model (exact) and keras.applications."""

import numpy as np
import pytest

from edgeeff.core.arch import phi_spec, preset_spec
from edgeeff.core.cost import cost
from tests.conftest import needs

keras = needs("keras")
from edgeeff.model.build import build_model, macs_from_keras, trainable_params  # noqa: E402

SPECS = [
    preset_spec("lite0"),
    preset_spec("b0", num_classes=10),
    phi_spec(-2.3, "lite", 10),
    phi_spec(-1.5, "efficientnet", 7),
    phi_spec(-4.0, "efficientnet", 1000),
    phi_spec(0.6, "lite", 100),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{s.num_classes}")
def test_built_model_matches_analytic_cost_exactly(spec):
    m = build_model(spec)
    c = cost(spec)
    assert trainable_params(m) == c.params
    assert macs_from_keras(m) == c.macs
    assert m.input_shape == (None, spec.resolution, spec.resolution, 3)
    assert m.output_shape == (None, spec.num_classes)


def test_layer_names_are_keras_applications_names():
    m = build_model(preset_spec("b0"))
    names = {layer.name for layer in m.layers}
    ref = keras.applications.EfficientNetB0(weights=None)
    weighted = {layer.name for layer in ref.layers if layer.weights and
                layer.name not in ("normalization", "rescaling")}
    assert weighted <= names  # every weighted Keras layer exists here under the same name
    assert {"stem_conv", "block2a_expand_conv", "block1a_se_reduce", "top_conv",
            "predictions"} <= names
    assert trainable_params(m) == trainable_params(ref) == 5_288_548


def test_lite_has_no_se_and_uses_relu6():
    m = build_model(preset_spec("lite0"))
    names = [layer.name for layer in m.layers]
    assert not any("se_" in n for n in names)
    assert m.get_layer("block2a_expand_activation").get_config()["activation"] == "relu6"
    assert trainable_params(m) == 4_652_008


def test_model_normalises_raw_pixels_inside():
    spec = phi_spec(-3, "lite", 5)
    m = build_model(spec, training_dropout=False)
    bare = build_model(spec, include_preprocessing=False, training_dropout=False)
    bare.set_weights(m.get_weights())
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (2, spec.resolution, spec.resolution, 3)).astype("float32")
    np.testing.assert_allclose(m.predict(raw, verbose=0),
                               bare.predict((raw - 127.0) / 128.0, verbose=0), atol=1e-5)

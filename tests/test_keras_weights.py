"""b0-b7: Keras-format weights from keras.applications load into the builder by layer name."""

import numpy as np
import pytest

from edgeeff.core.arch import preset_spec
from tests.conftest import needs

keras = needs("keras")
needs("h5py")


def test_keras_applications_b0_weights_give_identical_outputs(tmp_path):
    from edgeeff.model.build import build_model
    from edgeeff.model.weights import load_into

    keras.utils.set_random_seed(0)
    ref = keras.applications.EfficientNetB0(weights=None)
    rng = np.random.default_rng(0)
    # non-trivial values everywhere, BatchNorm statistics and input normalisation included
    for layer in ref.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if layer.name == "normalization":
            mean = rng.uniform(0.3, 0.6, ws[0].shape).astype("float32")
            var = rng.uniform(0.04, 0.09, ws[1].shape).astype("float32")
            layer.set_weights([mean, var] + ws[2:])
            continue
        new = []
        for w in ws:
            if isinstance(layer, keras.layers.BatchNormalization) and w is ws[3]:
                new.append(rng.uniform(0.5, 1.5, w.shape).astype("float32"))  # variance > 0
            else:
                new.append((w + rng.normal(0, 0.05, w.shape)).astype("float32"))
        layer.set_weights(new)
    path = tmp_path / "b0.weights.h5"
    ref.save_weights(str(path))

    spec = preset_spec("b0")
    ours = build_model(spec, training_dropout=False)
    assert load_into(ours, spec, str(path)) == "file b0.weights.h5"
    x = rng.integers(0, 256, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(ours.predict(x, verbose=0), ref.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_weights_of_another_spec_are_refused(tmp_path):
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.model.build import build_model
    from edgeeff.model.weights import load_into

    small = build_model(preset_spec("lite0", num_classes=10))
    path = tmp_path / "lite0.weights.h5"
    small.save_weights(str(path))
    other = build_model(preset_spec("lite1", num_classes=10))
    with pytest.raises(EdgeeffError, match="shapes|no weights"):
        load_into(other, preset_spec("lite1", num_classes=10), str(path))
    again = build_model(preset_spec("lite0", num_classes=10))
    load_into(again, preset_spec("lite0", num_classes=10), str(path))
    for a, b in zip(small.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)

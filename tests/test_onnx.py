"""ONNX in through onnx2tf, on a model the test builds itself (offline)."""

import json

import numpy as np
import pytest

from tests.conftest import ROOT, needs, run_cli

onnx = needs("onnx")
needs("onnx2tf")
ort = needs("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def tiny_classifier(path, size=32, classes=4):
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "B"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, classes)).astype(np.float32), "F"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "FB"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "F", "FB"], ["l"]),
        helper.make_node("Softmax", ["l"], ["y"], axis=1),
    ]
    g = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


STAND_IN_ONNXSIM = """#!/bin/sh
# stand-in for the onnxsim command (not an edgeeff dependency): onnx2tf runs it as
# 'onnxsim IN IN', rewriting the file it converts; this one records its arguments and
# rewrites the file unchanged
echo "$@" >> "{argv}"
cp "$1" "$1.tmp" && mv "$1.tmp" "$2"
"""


def test_onnx_import_int8_matches_onnxruntime(tmp_path):
    import hashlib
    import os

    (tmp_path / "models").mkdir()
    src = tiny_classifier(tmp_path / "models" / "tiny.onnx")
    before = hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_mtime_ns
    out = tmp_path / "out"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "onnxsim").write_text(STAND_IN_ONNXSIM.format(argv=tmp_path / "argv"))
    (bin_dir / "onnxsim").chmod(0o755)
    # relative paths, resolved against the caller's folder (onnx2tf runs in its own folder and
    # calls sys.exit on failure: this once exited 1 silently)
    r = run_cli("export", "--from", "models/tiny.onnx", "--int8", "--mean", "127", "--std",
                "128", "--num-calib", "12", "--format", "tflite,tflm,edgetpu", "--out", "out",
                cwd=tmp_path, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr[-3000:]
    # onnx2tf simplified a private copy: the user's file is untouched
    calls = (tmp_path / "argv").read_text().split()
    assert calls and str(src) not in calls and all(c.endswith("tiny.onnx") for c in calls[:2])
    assert (hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_mtime_ns) == before
    card = json.loads((out / "model_card.json").read_text())
    from edgeeff.core.preprocess import Preprocessor

    assert Preprocessor.from_dict(card["preprocessing"]) == Preprocessor(32, 127, 128, True)
    assert card["source"]["onnx"] == "tiny.onnx" and card["calibration"]["count"] == 12
    a = card["artifacts"]["model_int8.tflite"]
    assert a["float_ops"] == [] and a["input"]["dtype"] == "uint8"
    assert a["input"]["scale"] == [0.0078125] and a["input"]["zero_point"] == [127]
    assert card["artifacts"]["tflm"]["min_arena_bytes"] > 0
    assert not list(tmp_path.glob("calibration_image_sample_data*"))  # onnx2tf kept to its folder

    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.data.images import load_preprocessed
    from edgeeff.device.runtime import Classifier

    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    fq, ff = Classifier(out / "model_int8.tflite"), Classifier(out / "model_float32.tflite")
    agree = 0
    files = sorted((ROOT / "calibration").glob("*.jpg"))[:12]
    for f in files:
        img = load_preprocessed(f, Preprocessor(32))
        x = ((img.astype(np.float32) - 127) / 128).transpose(2, 0, 1)[None]
        ref = sess.run(None, {"x": x})[0][0]
        np.testing.assert_allclose(ff(img), ref, atol=1e-4)  # float: same function
        agree += int(fq(img).argmax() == ref.argmax())
    assert agree >= len(files) - 1


def test_onnx_bad_inputs(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r = run_cli("export", "--from", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not a valid ONNX model" in r.stderr
    r = run_cli("export", "--from", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "ONNX model not found" in r.stderr
    src = tiny_classifier(tmp_path / "t.onnx")
    r = run_cli("export", "--from", str(src), "--std", "0", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--std" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text,ok", [("127", True), ("1,2,3", True), ("1,2", False), ("x", False)])
def test_norm_parsing(text, ok):
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.export.onnx import _parse_norm

    if ok:
        assert len(_parse_norm(text, 0, "--mean")) == 3
    else:
        with pytest.raises(EdgeeffError):
            _parse_norm(text, 0, "--mean")


def test_conversion_failure_names_onnxsim_when_it_is_missing(tmp_path, monkeypatch):
    """onnx2tf runs the onnxsim command when it is on PATH; without it, graphs such as
    PyTorch's EfficientNet-Lite with dynamic "same" padding fail to convert (issue 11)."""
    from edgeeff.export.onnx import conversion_error

    monkeypatch.setenv("PATH", str(tmp_path))
    e = conversion_error("m.onnx", "ERROR: something\nmore")
    assert str(e).startswith("onnx2tf could not convert m.onnx: ERROR: something | more")
    assert "\n" not in str(e)
    assert "pip install onnxsim" in str(e)
    sim = tmp_path / "onnxsim"
    sim.write_text("#!/bin/sh\n")
    sim.chmod(0o755)
    assert "onnxsim" not in str(conversion_error("m.onnx", "ERROR: x"))

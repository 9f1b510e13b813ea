"""One Preprocessor, every path: the same photo gives the same input tensor through
calibration, training/validation, evaluation, the demo's frame path and the runtime, and the
preprocessing written into a model's metadata reads back equal."""

import json

import numpy as np
import pytest

from edgeeff.core.arch import phi_spec, preset_spec
from edgeeff.core.preprocess import Preprocessor
from tests.conftest import ROOT, needs

needs("cv2")

PHOTO = ROOT / "calibration" / "grace_hopper_0.jpg"  # not square: exercises the crop offsets


@pytest.mark.parametrize("resolution", [224, 260, 96])
def test_every_pixel_path_gives_the_same_crop(resolution, tmp_path):
    from edgeeff.data.images import frame_into, load_bgr, load_preprocessed, resize_crop
    from edgeeff.model.calibrate import load_calibration
    from edgeeff.model.train import load_pixels

    pp = Preprocessor.for_spec(preset_spec("lite0", resolution=resolution))
    ref = load_preprocessed(PHOTO, pp)
    assert ref.shape == (resolution, resolution, 3) and ref.dtype == np.uint8

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / PHOTO.name).write_bytes(PHOTO.read_bytes())
    calib = load_calibration(tmp_path / "c", pp, num=1, holdout=False).images[0]

    frame = np.empty_like(ref)
    frame_into(load_bgr(PHOTO), pp, frame)

    # training keeps the whole shorter-side square; its centre crop is the validation image
    square = load_pixels([PHOTO], pp)[0][0]
    assert square.shape[0] == pp.shorter_side  # no second crop (the old 0.875 * 0.875 bug)
    off = (pp.shorter_side - resolution) // 2
    val = square[off:off + resolution, off:off + resolution]

    for name, x in (("calibration", calib), ("demo frame", frame), ("validation", val)):
        diff = np.abs(x.astype(int) - ref.astype(int)).max()
        assert diff <= 1, f"{name} differs from eval by {diff} LSB"
    # and the crop really is the centre 87.5 %: a wider crop would not match
    wide = resize_crop(load_bgr(PHOTO)[..., ::-1], Preprocessor(resolution, crop_fraction=0.76))
    assert np.abs(wide.astype(int) - ref.astype(int)).max() > 1


def test_training_validation_pipeline_matches_eval_crop():
    needs("tensorflow")
    from edgeeff.data.images import load_preprocessed
    from edgeeff.model.train import _datasets, load_pixels

    pp = Preprocessor(224)
    x, _ = load_pixels([PHOTO], pp)
    _, val = _datasets(x, np.array([0]), x, np.array([0]), 224, 1, 2)
    img = next(iter(val))[0].numpy()[0]
    ref = load_preprocessed(PHOTO, pp)
    assert np.abs(img - ref.astype(np.float32)).max() <= 1.0


def test_full_image_training_pipeline_zooms_not_only_mirrors():
    """--distribute's training images (one per draw) are random crops resized back, not the
    square itself mirrored and brightened: after undoing mirror and brightness the pixels
    still differ beyond the brightness clip for most draws."""
    needs("tensorflow")
    from edgeeff.model.train import _datasets

    g = np.linspace(0, 200, 32, dtype=np.float32)
    x = np.broadcast_to((g[:, None] + g[None, :] / 4)[None, :, :, None], (1, 32, 32, 3))
    x = x.astype(np.uint8)
    train, _ = _datasets(x, np.array([0]), x, np.array([0]), 32, 1, 2)
    moved = 0
    for _ in range(12):
        img = next(iter(train))[0].numpy()[0]
        assert img.shape == (32, 32, 3)
        left = min(np.std(img - ref) for ref in (x[0], x[0][:, ::-1]))  # a shift is std 0
        moved += left > 2.0
    assert moved >= 8, moved


def test_record_round_trip_and_old_metadata():
    pp = Preprocessor.for_spec(phi_spec(-1.5, "lite"), normalized=True)
    back = Preprocessor.from_dict(json.loads(json.dumps(pp.to_dict())))
    assert back == pp
    old = {"normalized": True, "mean": [127.0] * 3, "std": [128.0] * 3, "pixel_range": [0, 255],
           "color": "RGB", "resolution": 224}  # what models exported before this record had
    assert Preprocessor.from_dict(old) == Preprocessor(224, (127,) * 3, (128,) * 3, True)


def test_quantised_input_lut():
    pp = Preprocessor(8, (127,) * 3, (128,) * 3, normalized=True)
    assert pp.bind(np.uint8, 1 / 128, 127).lut() is None  # folded: raw pixels, zero cost
    lut = pp.bind(np.int8, 1 / 128, -1).lut()
    assert lut.dtype == np.int8 and lut[0, 0] == -128 and lut[255, 0] == 127
    out = np.empty((8, 8, 3), np.float32)
    pp.to_input(np.full((8, 8, 3), 255, np.uint8), out)
    assert np.allclose(out, 1.0)


def test_exported_models_carry_the_export_preprocessor(lite0_export):
    from edgeeff.data.images import load_preprocessed
    from edgeeff.device.runtime import Classifier, read_embedded_metadata

    spec = preset_spec("lite0")
    expected = Preprocessor.for_spec(spec, normalized=True)  # lite: the graph takes (p-127)/128
    card = json.loads((lite0_export / "model_card.json").read_text())
    assert Preprocessor.from_dict(card["preprocessing"]) == expected
    crop = load_preprocessed(PHOTO, expected)
    for name in ("model_int8.tflite", "model_float32.tflite"):
        md = read_embedded_metadata((lite0_export / name).read_bytes())
        assert Preprocessor.from_dict(md["input"]) == expected, name
        clf = Classifier(lite0_export / name, num_threads=1)
        clf.set_input(crop)
        buf = clf._buf[0]
        if name == "model_int8.tflite":  # uint8 input = the raw crop, exactly
            assert clf.raw_pixel_input and np.array_equal(buf, crop)
        else:
            assert np.allclose(buf, (crop.astype(np.float32) - 127) / 128, atol=1e-6)


def test_the_demo_capture_thread_makes_the_runtime_input_tensor(lite0_export):
    """The demo's capture thread writes the input tensor itself (the inference thread only
    hands it to ``invoke``): for a raw-pixel uint8 model and a normalised float32 one it is
    what ``Classifier.set_input`` makes of eval's crop (within the 1 LSB the frame path may
    differ by, above), and the model's answer is the same."""
    from edgeeff.data.images import load_bgr, load_preprocessed
    from edgeeff.device import demo
    from edgeeff.device.runtime import Classifier

    bgr = load_bgr(PHOTO)

    class OnePhoto(demo.Source):
        def frames(self):
            yield bgr

    for name, lsb in (("model_int8.tflite", 1), ("model_float32.tflite", 1 / 128)):
        clf = Classifier(lite0_export / name, num_threads=1)
        cap = demo.Capture(OnePhoto(), clf.preprocessor)
        cap.start()
        cap.join(timeout=30)
        _, slot = cap.q.get_nowait()
        tensor = cap.bufs[slot]
        clf.set_input(load_preprocessed(PHOTO, clf.preprocessor))
        assert tensor.shape == clf._buf.shape and tensor.dtype == clf._buf.dtype, name
        assert np.abs(tensor.astype(np.float64) - clf._buf).max() <= lsb + 1e-6, name
        assert np.argmax(clf.invoke(tensor)) == np.argmax(clf.invoke()), name


def test_the_capture_thread_applies_a_quantised_input_table():
    """An int8 input with its own scale: the capture buffer holds the table's values."""
    from edgeeff.device import demo

    pp = Preprocessor(8, (127,) * 3, (128,) * 3, normalized=True).bind(np.int8, 1 / 128, -1)

    class Grey(demo.Source):
        def frames(self):
            yield np.full((16, 16, 3), 200, np.uint8)

    cap = demo.Capture(Grey(), pp)
    cap.start()
    cap.join(timeout=10)
    _, slot = cap.q.get_nowait()
    assert cap.bufs[slot].dtype == np.int8 and (cap.bufs[slot] == pp.lut()[200, 0]).all()

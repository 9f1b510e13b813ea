"""Calibration and image loading: odd files are converted, broken ones skipped and counted."""

import warnings

import numpy as np
import pytest

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.preprocess import Preprocessor
from tests.conftest import ROOT, needs

cv2 = needs("cv2")

from edgeeff.device.images import load_rgb, resize_crop  # noqa: E402
from edgeeff.model.calibrate import load_calibration  # noqa: E402


def test_odd_formats_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb, np.full((40, 60), 128, np.uint8)]))
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[..., 0])
    cv2.imwrite(str(tmp_path / "deep.png"), (rgb.astype(np.uint16) * 257))
    cv2.imwrite(str(tmp_path / "img.bmp"), rgb)
    cv2.imwrite(str(tmp_path / "img.webp"), rgb, [cv2.IMWRITE_WEBP_QUALITY, 101])
    for name in ("rgba.png", "gray.png", "deep.png", "img.bmp", "img.webp"):
        img = load_rgb(tmp_path / name)
        assert img is not None and img.shape == (40, 60, 3) and img.dtype == np.uint8, name
    # BGR on disk, RGB in memory
    np.testing.assert_array_equal(load_rgb(tmp_path / "img.bmp"), rgb[..., ::-1])
    g = load_rgb(tmp_path / "gray.png")
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()


def test_cmyk_jpeg_is_converted(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red
    img = load_rgb(tmp_path / "cmyk.jpg")
    assert img.shape == (24, 32, 3) and img[..., 0].mean() > 200 and img[..., 1].mean() < 60


def test_resize_crop_is_centre_crop_of_shorter_side():
    img = np.zeros((300, 400, 3), np.uint8)
    img[:, 150:250] = 255  # a centred vertical band
    out = resize_crop(img, Preprocessor(224))
    assert out.shape == (224, 224, 3)
    assert out[:, 112].min() == 255 and out[:, 0].max() == 0  # band centred, edges cropped away


def test_unreadable_files_are_skipped_counted_and_warned(tmp_path):
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"]):
        src = sorted((ROOT / "calibration").glob("*.jpg"))[i]
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / name).write_bytes(src.read_bytes())  # found recursively
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "notes.txt").write_text("ignored: not an image")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cs = load_calibration(tmp_path, Preprocessor(64), num=10, warn_short=10)
    msgs = [str(x.message) for x in w]
    assert any("skipped 1 unreadable" in m for m in msgs)
    assert any("only 5 usable calibration images" in m for m in msgs)
    assert cs.images.shape == (5, 64, 64, 3) and len(cs.holdout) == 1
    assert cs.record()["skipped_unreadable"] == 1 and len(cs.sha256) == 64
    # the same files give the same hash
    assert load_calibration(tmp_path, Preprocessor(64), num=10).sha256 == cs.sha256


def test_no_usable_images_is_an_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"nope")
    with pytest.raises(EdgeeffError, match="no usable calibration images"):
        load_calibration(tmp_path, Preprocessor(64))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeeffError, match="no images"):
        load_calibration(tmp_path / "empty", Preprocessor(64))
    with pytest.raises(EdgeeffError, match="not found"):
        load_calibration(tmp_path / "missing", Preprocessor(64))

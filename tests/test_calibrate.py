"""Calibration and image loading: odd files are converted, broken ones skipped and counted."""

import warnings

import numpy as np
import pytest

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.preprocess import Preprocessor
from tests.conftest import ROOT, needs
from tests.helpers import strings

cv2 = needs("cv2")

from edgeeff.data.images import load_rgb, resize_crop  # noqa: E402
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


# --------------------------------------------------------------------------- stratified sampling

CLASSES = ["a_astronaut", "b_chelsea", "c_coffee", "d_rocket"]


def class_folders(root, per_class=6):
    """4 class sub-folders x ``per_class`` images: the bundled crops of one photo each, plus
    mirrored copies (different bytes, same class)."""
    for name in CLASSES:
        d = root / name
        d.mkdir(parents=True)
        crops = sorted((ROOT / "calibration").glob(f"{name[2:]}_*.jpg"))
        for k in range(per_class):
            img = cv2.imread(str(crops[k % len(crops)]))
            if k >= len(crops):
                img = np.ascontiguousarray(img[:, ::-1])
            cv2.imwrite(str(d / f"{k}.jpg"), img)
    return root


def _classes_of(files):
    from collections import Counter

    return Counter(f.split("/")[0] for f in files)


def test_class_folders_are_sampled_round_robin_in_both_sets(tmp_path):
    data = class_folders(tmp_path / "data")
    # the first N in sort order would all be a_astronaut's
    small = load_calibration(data, Preprocessor(32), num=4)
    assert _classes_of(small.files) == {c: 1 for c in CLASSES}
    cs = load_calibration(data, Preprocessor(32), num=16)
    assert cs.classes == 4 and len(cs.images) == 16 and len(cs.holdout) == 4
    assert _classes_of(cs.files) == {c: 4 for c in CLASSES}  # balanced, not just present
    assert _classes_of(cs.holdout_files) == {c: 1 for c in CLASSES}
    assert not set(cs.files) & set(cs.holdout_files)
    # round-robin: every run of 4 consecutive calibration images holds each class once
    for i in range(0, 16, 4):
        assert len(_classes_of(cs.files[i:i + 4])) == 4
    # every image in the set is the file the record names, in that order
    for img, f in zip(cs.images, cs.files):
        np.testing.assert_array_equal(img, resize_crop(load_rgb(data / f), Preprocessor(32)))
    # seeded: the same seed gives the same sets, another seed another order
    again = load_calibration(data, Preprocessor(32), num=16)
    assert again.files == cs.files and again.holdout_files == cs.holdout_files
    other = load_calibration(data, Preprocessor(32), num=16, seed=1)
    assert other.files != cs.files and _classes_of(other.files) == {c: 4 for c in CLASSES}


def test_sha256_covers_exactly_the_used_files_in_listed_order(tmp_path):
    import hashlib

    data = class_folders(tmp_path / "data")
    cs = load_calibration(data, Preprocessor(32), num=2)
    used = cs.files + cs.holdout_files
    assert len(used) == 3
    # documented: sha256 of `(cd DATA && sha256sum FILES... HOLDOUT_FILES...)`
    manifest = "".join(f"{hashlib.sha256((data / f).read_bytes()).hexdigest()}  {f}\n"
                       for f in used)
    assert cs.sha256 == hashlib.sha256(manifest.encode()).hexdigest()
    rec = cs.record()
    assert rec["files"] == cs.files and rec["holdout_files"] == cs.holdout_files
    assert "sha256sum" in rec["sha256_of"]
    # changing every file that was not used leaves the hash alone; changing a used one does not
    for p in data.rglob("*.jpg"):
        if p.relative_to(data).as_posix() not in used:
            p.write_bytes(p.read_bytes() + b"\0")
    assert load_calibration(data, Preprocessor(32), num=2).sha256 == cs.sha256
    (data / used[-1]).write_bytes((data / used[-1]).read_bytes() + b"\0")
    assert load_calibration(data, Preprocessor(32), num=2).sha256 != cs.sha256


def test_record_names_files_relative_and_no_absolute_path(tmp_path):
    from edgeeff.model.calibrate import BUNDLED

    data = class_folders(tmp_path / "my data")
    cs = load_calibration(data, Preprocessor(32), num=8)
    rec = cs.record()
    assert rec["source"] == "my data/"
    for f in rec["files"] + rec["holdout_files"]:
        assert not f.startswith("/") and (data / f).is_file()

    assert not [s for s in strings(rec) if s.startswith("/") or str(tmp_path) in s]
    assert "files" not in cs.record(files=False)
    bundled = load_calibration(None, Preprocessor(32), num=8)
    assert bundled.source == BUNDLED and bundled.classes == 1  # a flat folder is one class
    assert len(bundled.holdout) == 2 and len(bundled.images) == 8


def test_flat_folder_holds_back_one_in_five(tmp_path):
    cs = load_calibration(None, Preprocessor(32), num=100)  # the 36 bundled crops
    assert len(cs.images) == 29 and len(cs.holdout) == 7


def test_holdout_labels_come_from_sub_folder_names(tmp_path):
    data = class_folders(tmp_path / "data")
    cs = load_calibration(data, Preprocessor(32), num=16)
    labels = ["d_rocket", "c_coffee", "b_chelsea", "a_astronaut"]  # the model's order
    truth, note = cs.holdout_labels(labels)
    assert [labels[t] for t in truth] == [f.split("/")[0] for f in cs.holdout_files]
    assert "sub-folder" in note
    truth, note = load_calibration(None, Preprocessor(32), num=8).holdout_labels(labels)
    assert truth is None and note

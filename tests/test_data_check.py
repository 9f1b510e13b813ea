"""``edgeeff data check`` on folders built here, with every kind of finding planted: exact
duplicates, a near duplicate (the same photo resized and re-encoded), copies across the
training and validation folders, a truncated JPEG, a tiny and a grayscale image, an empty class;
and its exit codes (0 with warnings, 2 for a folder that cannot be trained on)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgeeff.data import check as dc
from edgeeff.data.folder import FolderError
from tests.conftest import needs, run_cli
from tests.test_layers import BLOCKER

cv2 = needs("cv2")


def photo(seed: int, h: int = 180, w: int = 240) -> np.ndarray:
    """A smooth random colour picture (a seeded 6x8 grid upsampled): distinct seeds give
    pHashes far apart."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def put(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def planted(tmp_path):
    """train/{cats,dogs,birds(empty)} and val/{cats,dogs}, with one of each finding."""
    train, val = tmp_path / "train", tmp_path / "val"
    for i in range(4):
        put(train / "cats" / f"c{i}.jpg", jpeg(photo(i)))
        put(train / "dogs" / f"d{i}.jpg", jpeg(photo(100 + i)))
    put(train / "cats" / "c0-copy.jpg", (train / "cats" / "c0.jpg").read_bytes())  # exact
    half = cv2.resize(photo(1), (120, 90), interpolation=cv2.INTER_AREA)
    put(train / "cats" / "c1-small.jpg", jpeg(half, 60))  # near: resized and re-encoded
    whole = jpeg(photo(7))
    put(train / "dogs" / "cut.jpg", whole[:len(whole) // 2])  # truncated
    put(train / "dogs" / "tiny.png", cv2.imencode(".png", photo(8, 40, 50))[1].tobytes())
    grey = cv2.cvtColor(photo(9), cv2.COLOR_BGR2GRAY)
    put(train / "dogs" / "grey.jpg", jpeg(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))  # stored RGB
    (train / "birds").mkdir()  # a class folder with no image
    for i in range(2):
        put(val / "cats" / f"v{i}.jpg", jpeg(photo(200 + i)))
        put(val / "dogs" / f"w{i}.jpg", jpeg(photo(300 + i)))
    put(val / "cats" / "leak.jpg", (train / "cats" / "c2.jpg").read_bytes())  # exact, across
    put(val / "dogs" / "leak-near.jpg", jpeg(photo(103), 50))  # near, across (re-encoded d3)
    return train, val


def names(groups):
    return sorted(sorted(str(f) for f in g.files) for g in groups)


def test_every_planted_finding_is_reported(planted):
    train, val = planted
    rep = dc.check(train, val)
    t, v = rep.folder("train"), rep.folder("val")
    assert dict(t.class_counts) == {"birds": 0, "cats": 6, "dogs": 6}  # cut.jpg is unreadable
    assert t.images == 13 and t.readable == 12 and t.empty_classes == ("birds",)
    assert [u.path for u in t.unreadable] == ["dogs/cut.jpg"] and t.truncated == ("dogs/cut.jpg",)
    assert [(x.path, x.width, x.height) for x in t.tiny] == [("dogs/tiny.png", 50, 40)]
    assert t.grayscale == ("dogs/grey.jpg",)
    assert t.imbalance == 1.0 and v.imbalance == 1.0
    assert names(rep.exact) == [["train:cats/c0-copy.jpg", "train:cats/c0.jpg"],
                                ["train:cats/c2.jpg", "val:cats/leak.jpg"]]
    assert names(rep.near) == [["train:cats/c1-small.jpg", "train:cats/c1.jpg"],
                               ["train:dogs/d3.jpg", "val:dogs/leak-near.jpg"]]
    assert all(g.distance <= dc.NEAR_DISTANCE for g in rep.near)
    assert [g.cross_split for g in rep.exact] == [True, False]  # leakage listed first
    assert names(rep.groups(cross=True)) == [["train:cats/c2.jpg", "val:cats/leak.jpg"],
                                             ["train:dogs/d3.jpg", "val:dogs/leak-near.jpg"]]
    # an empty training class cannot be trained on; the rest are warnings
    assert rep.exit_code == 2
    assert rep.problems == (f"training folder {train}: class 'birds' has no readable image",)
    text = "\n".join(rep.warnings)
    for needle in ("1 unreadable", "1 tiny", "1 grayscale", "leakage: 1 validation photo(s) "
                   "identical", "leakage: 1 validation photo(s) near duplicates"):
        assert needle in text


def test_cli_exit_codes_json_and_table(planted):
    train, val = planted
    r = run_cli("data", "check", str(train), "--val", str(val), "--json")
    assert r.returncode == 2, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["thresholds"]["near_duplicate_max_distance"] == 2
    assert doc["cross_split"] == {"exact": 1, "near": 1}
    assert doc["folders"][0]["empty_classes"] == ["birds"]
    (train / "birds").rmdir()  # now trainable: warnings only, exit 0
    r = run_cli("data", "check", str(train), "--val", str(val))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pHash <= 2 of 64 bits" in r.stdout and "ready to train (see the warnings)" in r.stdout
    assert "Traceback" not in r.stderr


def test_folders_that_cannot_be_trained_on(tmp_path):
    one = tmp_path / "one"
    put(one / "cats" / "a.jpg", jpeg(photo(0)))
    rep = dc.check(one)
    assert rep.exit_code == 2 and "1 class(es) with a readable image" in rep.problems[0]
    put(one / "dogs" / "b.jpg", jpeg(photo(1)))
    put(one / "stray.jpg", jpeg(photo(2)))
    rep = dc.check(one)
    assert rep.exit_code == 2 and "1 image(s) outside the class sub-folders" in rep.problems[0]
    (one / "stray.jpg").unlink()
    assert dc.check(one).exit_code == 0
    val = tmp_path / "val"
    put(val / "horses" / "h.jpg", jpeg(photo(3)))
    assert "horses have no readable image in the training folder" in dc.check(one, val).problems[0]
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    rep = dc.check(tmp_path / "empty")
    assert rep.exit_code == 2 and "no images" in rep.problems[0]
    with pytest.raises(FolderError):
        dc.check(tmp_path / "missing")
    r = run_cli("data", "check", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("edgeeff: error: data folder not found")


def test_leakage_line_for_train_and_tune(planted):
    train, val = planted
    shutil.rmtree(train / "birds")
    leak = dc.leakage(train, val)
    assert names(leak.groups) == [["train:cats/c2.jpg", "val:cats/leak.jpg"],
                                  ["train:dogs/d3.jpg", "val:dogs/leak-near.jpg"]]
    line = leak.line()
    assert "\n" not in line and line.startswith("data check: warning: 2 photo(s) of")
    # without --val: duplicates inside the folder, which a held-out split can separate
    assert len(dc.leakage(train).groups) == 2
    (val / "cats" / "leak.jpg").unlink()
    (val / "dogs" / "leak-near.jpg").unlink()
    assert dc.leakage(train, val).line().startswith(f"data check: no photo of {val}")


def test_truncation_is_told_from_the_bytes():
    whole = jpeg(photo(0))
    assert not dc.ends_early(whole, ".jpg") and dc.ends_early(whole[:-10], ".jpg")
    png = cv2.imencode(".png", photo(0))[1].tobytes()
    assert not dc.ends_early(png, ".png") and dc.ends_early(png[:-20], ".png")


def test_train_says_what_leaks_before_it_starts_and_check_needs_no_tensorflow(planted,
                                                                               tmp_path):
    train, val = planted
    (train / "birds").rmdir()
    blocked = "tensorflow,keras,tf_keras,onnx,onnx2tf,onnxruntime"
    r = subprocess.run([sys.executable, "-c", BLOCKER, blocked, "train", "--data", str(train),
                        "--val", str(val), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and lines[0].startswith(f"data check: warning: 2 photo(s) of {val}")
    assert "needs tensorflow" in lines[-1].lower()  # the line came before training would start
    r = subprocess.run([sys.executable, "-c", BLOCKER, blocked, "data", "check", str(train),
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stderr

"""The one labelled-folder reader: labels from sub-folders or ImageNet wnid file names, and the
seeded stratified split that training and calibration share. Listing needs no decoding, so
the images here are empty files with image names."""

import pytest

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.labels import imagenet_labels, imagenet_wnids
from edgeeff.data.folder import FolderError, ImageFolder


def make(root, names):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    return root


def test_sub_folders_are_the_classes_and_match_model_labels(tmp_path):
    make(tmp_path, [f"{c}/{i}.jpg" for c in ("Golden Retriever", "tabby-cat") for i in range(3)]
         + ["Golden Retriever/notes.txt"])
    f = ImageFolder(tmp_path)
    assert f.classes() == ["Golden Retriever", "tabby-cat"] and len(f.files) == 6
    assert [s.label for s in f.samples()] == [0, 0, 0, 1, 1, 1]
    # a model's labels are matched by name (case, spaces and dashes aside), not by position
    by_model = f.samples(["tabby_cat", "dog", "golden_retriever"])
    assert [s.label for s in by_model] == [2, 2, 2, 0, 0, 0]
    # generic class_N labels take the sorted sub-folders in order
    assert [s.label for s in f.samples(["class_0", "class_1"])] == [0, 0, 0, 1, 1, 1]
    with pytest.raises(FolderError) as e:
        f.samples(["cat", "dog"])
    assert e.value.problem == "unknown_class" and e.value.name == "Golden Retriever"


def test_flat_imagenet_folder_is_labelled_by_wnid(tmp_path):
    wnids = imagenet_wnids()
    make(tmp_path, [f"{wnids[7]}_cock.JPEG", f"{wnids[999]}_toilet_tissue.JPEG"])
    f = ImageFolder(tmp_path)
    assert [s.label for s in f.samples(imagenet_labels())] == [7, 999]
    with pytest.raises(FolderError) as e:
        f.samples(["a", "b"])  # no sub-folders and not ImageNet: nothing to label by
    assert e.value.problem == "unlabelled"
    with pytest.raises(FolderError) as e:
        ImageFolder(tmp_path, min_classes=2)  # a dataset to train on needs class folders
    assert e.value.problem == "few_classes" and "two class sub-folders" in str(e.value)
    make(tmp_path, ["holiday.jpg"])
    with pytest.raises(FolderError) as e:
        ImageFolder(tmp_path).samples(imagenet_labels())
    assert e.value.problem == "no_wnid" and e.value.name == "holiday.jpg"


def test_training_folders_need_every_image_in_a_class_folder(tmp_path):
    (tmp_path / "only").mkdir()  # no image at all: the training message, not "no images"
    with pytest.raises(FolderError) as e:
        ImageFolder(tmp_path, min_classes=2)
    assert e.value.problem == "few_classes"
    make(tmp_path, ["a/1.jpg", "b/1.jpg", "stray.jpg"])
    with pytest.raises(FolderError) as e:
        ImageFolder(tmp_path, min_classes=2)
    assert e.value.problem == "unlabelled" and "1 image(s) outside" in str(e.value)
    (tmp_path / "stray.jpg").unlink()
    assert ImageFolder(tmp_path, min_classes=2).classes() == ["a", "b"]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FolderError) as e:
        ImageFolder(tmp_path / "nope", what="calibration folder")
    assert e.value.problem == "missing" and str(e.value).startswith("calibration folder not found")
    with pytest.raises(FolderError) as e:
        ImageFolder(make(tmp_path, ["a/readme.md"]))
    assert e.value.problem == "empty" and e.value.folder == tmp_path


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.25])
def test_split_is_seeded_stratified_and_complete(tmp_path, fraction):
    sizes = {"a": 1, "b": 2, "c": 8, "d": 13}
    f = ImageFolder(make(tmp_path, [f"{c}/{i}.png" for c, n in sizes.items() for i in range(n)]))
    kept, held = f.split(fraction, seed=0)
    assert f.split(fraction, seed=0) == (kept, held)  # same seed, same lists
    for k, h in zip(kept, held):
        c = (k + h)[0].parent.name
        assert {p.parent.name for p in k + h} == {c}  # one class per queue
        assert sorted(k + h) == f.groups[c]  # every file exactly once
        m = sizes[c]
        assert len(h) == (0 if fraction == 0 or m < 2 else max(1, int(m * fraction)))
    other_kept, other_held = f.split(fraction, seed=1)
    assert (other_kept, other_held) != (kept, held)
    with pytest.raises(EdgeeffError, match="held-out fraction"):
        f.split(1.0)

"""A class-folder dataset split into training and validation images, decoded once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeeff.core.arch import ModelSpec
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.preprocess import Preprocessor
from edgeeff.data.folder import ImageFolder
from edgeeff.data.images import load_rgb, resize_crop, unreadable_note
from edgeeff.device.profile.host import usable_cores
from edgeeff.model import features as F
from edgeeff.model.train.progress import Phases


def folder_dataset(data: str | Path, val_fraction: float, seed: int = 0,
                   val_dir: str | Path | None = None):
    """A class-folder dataset's class names and its (train, validation) files and labels:
    with ``val_dir``, that folder (same class names) is the validation set; else
    :meth:`ImageFolder.split <edgeeff.data.folder.ImageFolder.split>` holds ``val_fraction``
    of every class out for validation (at least one image of each class that has two or
    more); each set is in file order."""
    folder = ImageFolder(data, min_classes=2)
    classes = folder.classes()
    label = {s.path: s.label for s in folder.samples()}
    if val_dir is not None:
        vfolder = ImageFolder(val_dir)
        extra = sorted(set(vfolder.classes()) - set(classes))
        if extra:
            raise EdgeeffError(f"--val {val_dir}: class folder(s) {', '.join(extra[:5])} "
                               f"are not in --data {data}")
        vs = vfolder.samples(classes)
        files = sorted(label)
        return classes, (files, [label[p] for p in files]), \
            ([s.path for s in vs], [s.label for s in vs])
    kept, held = folder.split(val_fraction, seed)
    sets = []
    for queues in (kept, held):
        files = sorted(p for q in queues for p in q)
        sets.append((files, [label[p] for p in files]))
    return classes, sets[0], sets[1]


def load_pixels(files: list[Path], pp: Preprocessor,
                progress=None) -> tuple[np.ndarray, list[int]]:
    """uint8 RGB images resized as ``pp`` does, keeping the whole ``pp.shorter_side`` centre
    square (random training crops come from it; its centre ``pp.resolution`` crop is the
    evaluation crop). Decoded on every core (OpenCV releases the GIL)."""
    def one(p):
        img = load_rgb(p)
        return None if img is None else resize_crop(img, pp, crop=pp.shorter_side)

    out, ok = [], []
    with ThreadPoolExecutor(max(1, min(8, usable_cores()))) as ex:
        for i, sq in enumerate(ex.map(one, files)):
            if progress:
                progress(1)
            if sq is not None:
                out.append(sq)
                ok.append(i)
    if not out:
        raise EdgeeffError("no readable training images")
    return np.stack(out), ok


def _datasets(x_train, y_train, x_val, y_val, resolution: int, batch: int, num_classes: int,
              seed: int = 0):
    import tensorflow as tf

    auto = tf.data.AUTOTUNE

    lo, hi = (v ** 0.5 for v in F.RRC_SCALE)  # side fractions of the cached views' areas

    def augment(img, label):
        # the squares are ``resolution`` wide (the eval crop): a random square of 50-100 % of
        # the area, resized back, is the zoom the cached views get (F.random_view); cropping
        # ``resolution`` from ``resolution`` would change nothing
        side = tf.cast(tf.shape(img)[0], tf.float32)
        s = tf.cast(tf.round(side * tf.random.uniform([], lo, hi)), tf.int32)
        img = tf.image.random_crop(img, tf.stack([s, s, 3]))
        img = tf.image.resize(tf.cast(img, tf.float32), (resolution, resolution))
        img = tf.image.random_flip_left_right(img)
        img = tf.clip_by_value(tf.image.random_brightness(img, 20.0), 0.0, 255.0)
        return img, tf.one_hot(label, num_classes)

    def center(img, label):
        off = (img.shape[0] - resolution) // 2
        img = img[off:off + resolution, off:off + resolution]
        return tf.cast(img, tf.float32), tf.one_hot(label, num_classes)

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).cache()
             .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
             .map(augment, num_parallel_calls=auto).batch(batch).prefetch(auto))
    val = (tf.data.Dataset.from_tensor_slices((x_val, y_val)).map(center, num_parallel_calls=auto)
           .cache().batch(batch).prefetch(auto))
    return train, val


def load_split(data, val_dir, val_fraction, spec: ModelSpec, seed: int, phases: Phases, log):
    """Class names, ``spec`` with their number, every image decoded once as ``spec``'s
    squares, their labels, and the indices of the training and of the validation images."""
    classes, (tr_files, tr_labels), (va_files, va_labels) = folder_dataset(
        data, val_fraction, seed, val_dir)
    spec = replace(spec, num_classes=len(classes))
    if not va_files:
        raise EdgeeffError("too few images for a validation split (need 2+ in some class)")
    phases.report("load", 0)
    pixels, ok = load_pixels(tr_files + va_files, F.preprocessor(spec),
                             progress=lambda n: phases.report("load", n))
    skipped = len(tr_files) + len(va_files) - len(ok)
    if skipped:
        log(unreadable_note(skipped, data if val_dir is None else f"{data} and {val_dir}"))
    y = np.array(tr_labels + va_labels)[ok]
    is_val = np.array(ok) >= len(tr_files)
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if not len(va):
        raise EdgeeffError("no readable validation images")
    src = f"--val {val_dir}" if val_dir else f"{val_fraction:.0%} of --data"
    log(f"train: {len(tr)} images, validation: {len(va)} images ({src}), {len(classes)} classes")
    return classes, spec, pixels, y, tr, va


def load_sets(tr_files: list[Path], tr_labels: list[int], va_files: list[Path],
              va_labels: list[int], train_pp: Preprocessor, val_pp: Preprocessor, src: str, log
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training squares decoded with ``train_pp`` (the views are cut from them), validation
    images with ``val_pp`` and centre-cropped (the crop export and eval see), with labels."""
    sq, ok = load_pixels(tr_files, train_pp)
    y_tr = np.array(tr_labels)[ok]
    if len(ok) < len(tr_files):
        log(unreadable_note(len(tr_files) - len(ok), src))
    if not va_files:
        raise EdgeeffError("too few images for a validation split (need 2+ in some class)")
    try:
        va, ok_va = load_pixels(va_files, val_pp)
    except EdgeeffError:
        raise EdgeeffError("no readable validation images") from None
    if len(ok_va) < len(va_files):
        log(unreadable_note(len(va_files) - len(ok_va), "the validation images"))
    x_va = F.centre(va, val_pp.resolution)
    log(f"train: {len(sq)} images, validation: {len(x_va)} images ({src}), "
        f"{len(set(tr_labels) | set(va_labels))} classes")
    return sq, y_tr, x_va, np.array(va_labels)[ok_va]

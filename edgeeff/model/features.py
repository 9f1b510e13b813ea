"""The frozen part of a fine-tuned network, run once per training view instead of once per epoch.

``train`` fine-tunes only the top stages (``FINE_TUNE_FROM``) with BatchNormalization frozen, so
everything below them is a fixed function of the input crop. The recipe therefore:

1. cuts the Keras model at the input of the first fine-tuned block (:func:`split`);
2. converts the frozen trunk to a float32 TFLite model and runs it with the TFLite runtime's
   XNNPACK kernels, one image at a time (several times faster than Keras' ``predict`` on a
   CPU, and batching does not help XNNPACK; benchmarks/transfer_clothing.py measures the
   recipe) — Keras' ``predict`` when no TFLite runtime is installed, or when there are too
   few images for the conversion to pay (:data:`CONVERT_FROM_PIXELS`);
3. computes a fixed number of *views* of every training image once (the centre crop, then random
   resized crops with flips and brightness/contrast jitter, seeded: a resumed run gets the same
   views), stored as float16.

The trainable top then trains on those features for every epoch. Mixed precision is not used:
on CPUs without bfloat16 units it cannot pay, and even with them Keras' ``mixed_bfloat16``
policy made an epoch slower than float32 here (docs/usage.md, transfer learning).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeeff.core.arch import ModelSpec, expand
from edgeeff.core.fsutil import raise_if_interrupted
from edgeeff.core.preprocess import Preprocessor
from edgeeff.device.profile.host import usable_cores
from edgeeff.device.runtime import load_interpreter
from edgeeff.model.quiet import captured_output

FINE_TUNE_FROM = 6  # stages 6-7, top_conv and the head are fine-tuned
# A trained model's evaluation crop: the shorter side's whole centre square, not ImageNet's
# 0.875. A user's photos frame the object (clothing-small: a garment filling a 3:4 portrait), and
# cutting its edges cuts what tells a dress from a skirt (docs/usage.md, transfer learning).
# Recorded in the spec file, so export, calibration, eval and the demo use the same crop.
TRAIN_CROP_FRACTION = 1.0
# Random resized crops keep at least half of that square: smaller crops of a framed garment cut
# away what tells the classes apart (the comparison is in docs/usage.md, transfer learning).
RRC_SCALE = (0.5, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
# Converting a trunk to TFLite costs seconds whatever the input; what XNNPACK then saves over
# Keras grows with every image's pixels. The trunk is converted only when the images it will run
# hold at least this many input pixels in all (about 200 images at 224 px, 1100 at 96 px): the
# break-even of conversion time against per-image savings, measured for Lite0's trunk and pooled
# features at 96 and 224 px on a 2-core x86 host (the fixed cost and the per-pixel saving scale together
# with the machine's speed, so the break-even moves little between machines).
CONVERT_FROM_PIXELS = 10_000_000


def preprocessor(spec: ModelSpec) -> Preprocessor:
    """The preprocessing a model fine-tuned by ``train`` is trained and evaluated with."""
    return replace(Preprocessor.for_spec(spec), crop_fraction=TRAIN_CROP_FRACTION)


def first_tuned_layer(spec: ModelSpec, stage: int = FINE_TUNE_FROM) -> str:
    """The name of the first layer of the first block of ``stage`` (from the block table)."""
    b = next(b for b in expand(spec).blocks if b.stage >= stage)
    return b.name + ("_expand_conv" if b.expand_ratio != 1 else "_dwconv")


def split(model, spec: ModelSpec, stage: int = FINE_TUNE_FROM):
    """(frozen trunk, trainable top) sharing ``model``'s layers: training the top trains the model.
    The cut is exact because the first block of a stage has no residual from below."""
    import keras

    cut = model.get_layer(first_tuned_layer(spec, stage)).input
    return keras.Model(model.input, cut, name="trunk"), keras.Model(cut, model.output, name="top")


class TrunkRunner:
    """The frozen trunk as a float32 TFLite model on XNNPACK, or Keras where no runtime is or
    where ``images`` (how many it will run in all, when known) are too few to pay for the
    conversion (:data:`CONVERT_FROM_PIXELS`). The two agree to float16 rounding."""

    @staticmethod
    def converting_pays(trunk, images: int | None) -> bool:
        """Whether ``images`` runs of ``trunk`` (None: unknown, so yes) hold at least
        :data:`CONVERT_FROM_PIXELS` input pixels."""
        return images is None or images * trunk.input_shape[1] * trunk.input_shape[2] >= \
            CONVERT_FROM_PIXELS

    def __init__(self, trunk, threads: int | None = None, images: int | None = None):
        self.keras = trunk
        threads = threads or usable_cores()  # the runtime's default is one thread
        self.runtime = "keras"
        self.it = None
        if not self.converting_pays(trunk, images):
            self.runtime = f"keras ({images} images: fewer than converting pays for)"
            return
        try:
            import tensorflow as tf

            with captured_output():  # the converter prints every captured variable
                fb = tf.lite.TFLiteConverter.from_keras_model(trunk).convert()
            self.it, name, _ = load_interpreter(fb, num_threads=threads)
            self.runtime = f"{name} (float32, XNNPACK)"
            self.inp = self.it.get_input_details()[0]["index"]
            self.out = self.it.get_output_details()[0]["index"]
        except Exception:  # noqa: BLE001 - no runtime or no conversion: Keras does the work
            raise_if_interrupted()  # an interrupted conversion is not a missing runtime
            self.it = None

    def __call__(self, images: np.ndarray, progress=None) -> np.ndarray:
        """uint8 (n, r, r, 3) -> float16 features."""
        if self.it is None:
            out = []
            for i in range(0, len(images), 32):
                out.append(self.keras.predict(images[i:i + 32].astype(np.float32),
                                              verbose=0).astype(np.float16))
                if progress:
                    progress(len(images[i:i + 32]))
            return np.concatenate(out)
        out = None
        for i, img in enumerate(images):
            self.it.set_tensor(self.inp, img[None].astype(np.float32))
            self.it.invoke()
            f = self.it.get_tensor(self.out)[0]
            if out is None:
                out = np.empty((len(images),) + f.shape, np.float16)
            out[i] = f
            if progress:
                progress(1)
        return out


def centre(pixels: np.ndarray, resolution: int) -> np.ndarray:
    """The evaluation crop of cached squares (the one export, eval and the demo see)."""
    o = (pixels.shape[1] - resolution) // 2
    return pixels[:, o:o + resolution, o:o + resolution]


def random_view(pixels: np.ndarray, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """One random resized crop (scale 0.5-1 of the square, aspect 3:4-4:3), a coin-flip mirror
    and ±20 % brightness and contrast, for every image."""
    import cv2

    n, side = len(pixels), pixels.shape[1]
    out = np.empty((n, resolution, resolution, 3), np.uint8)
    for k in range(n):
        area = side * side * rng.uniform(*RRC_SCALE)
        ratio = np.exp(rng.uniform(np.log(RRC_RATIO[0]), np.log(RRC_RATIO[1])))
        w = min(side, int(round(np.sqrt(area * ratio))))
        h = min(side, int(round(np.sqrt(area / ratio))))
        y, x = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
        crop = pixels[k, y:y + h, x:x + w]
        interp = cv2.INTER_AREA if h > resolution else cv2.INTER_LINEAR
        img = cv2.resize(crop, (resolution, resolution), interpolation=interp).astype(np.float32)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        mean = img.mean()
        img = (img - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
        out[k] = np.clip(img, 0, 255)
    return out


def views(pixels: np.ndarray, resolution: int, n_views: int, seed: int):
    """Yield ``n_views`` uint8 views of every image: the centre crop first, then random ones;
    view ``v`` depends only on (seed, v), so an interrupted run resumes on the same data."""
    yield centre(pixels, resolution)
    for v in range(1, n_views):
        yield random_view(pixels, resolution, np.random.default_rng([seed, v]))

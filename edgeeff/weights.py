"""Where a model's weights come from: ``none`` (random), ``imagenet`` or a file path."""

from __future__ import annotations

import warnings
from pathlib import Path

from edgeeff.arch import ModelSpec
from edgeeff.errors import EdgeeffError

_DATA = Path(__file__).resolve().parent / "data"


def imagenet_labels() -> list[str]:
    return (_DATA / "imagenet_labels.txt").read_text(encoding="utf-8").splitlines()


def imagenet_wnids() -> list[str]:
    return (_DATA / "imagenet_wnids.txt").read_text(encoding="utf-8").splitlines()


class RandomWeightsWarning(UserWarning):
    pass


def load_into(model, spec: ModelSpec, weights: str) -> str:
    """Fill ``model``'s weights; returns a short description for the model card.

    ``auto`` means ImageNet weights where the architecture has them (and the
    ``edgeeff[pretrained]`` extra is installed), random initialisation otherwise.
    """
    if weights == "auto":
        from edgeeff import pretrained

        weights = "imagenet" if pretrained.available_for(spec) else "none"
    if weights in (None, "", "none"):
        warnings.warn("--weights none: random initialisation, predictions are MEANINGLESS "
                      "(use --weights imagenet or a trained checkpoint for a real model)",
                      RandomWeightsWarning, stacklevel=2)
        return "none (random initialisation)"
    if weights == "imagenet":
        from edgeeff import pretrained

        return pretrained.load_imagenet(model, spec)
    p = Path(weights)
    if not p.is_file():
        raise EdgeeffError(f"weights file not found: {weights}")
    try:
        model.load_weights(str(p))
    except Exception as e:  # noqa: BLE001 - any failure here is the user's file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EdgeeffError(f"cannot load weights from {weights}: {msg[:200]}") from None
    return f"file {p.name}"


def labels_for(num_classes: int, labels_file: str | None = None) -> list[str]:
    """labels.txt lines: a user's file, ImageNet's names for 1000 classes, else class_N."""
    if labels_file:
        try:
            lines = [x.strip() for x in Path(labels_file).read_text().splitlines() if x.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise EdgeeffError(f"cannot read labels file {labels_file}: {e}") from None
        if len(lines) != num_classes:
            raise EdgeeffError(f"{labels_file} has {len(lines)} labels, the model has "
                               f"{num_classes} classes")
        return lines
    if num_classes == 1000:
        return imagenet_labels()
    return [f"class_{i}" for i in range(num_classes)]

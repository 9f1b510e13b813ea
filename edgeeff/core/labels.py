"""Class labels: ImageNet's names and wnids (bundled), a user's labels.txt, or class_N."""

from __future__ import annotations

from pathlib import Path

from edgeeff.core import artifacts as A
from edgeeff.core.data import DATA_PACKAGE, package_data
from edgeeff.core.errors import EdgeeffError


def imagenet_labels() -> list[str]:
    return package_data(DATA_PACKAGE, A.IMAGENET_LABELS).read_text(encoding="utf-8").splitlines()


def imagenet_wnids() -> list[str]:
    return package_data(DATA_PACKAGE, A.IMAGENET_WNIDS).read_text(encoding="utf-8").splitlines()


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

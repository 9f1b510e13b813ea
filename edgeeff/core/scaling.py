"""Compound scaling (Tan & Le, 2019): how one coefficient phi grows depth, width and resolution.

Pure Python, no TensorFlow. Everything here is a small function of numbers so that it can be
unit- and property-tested and used by ``fit`` in microseconds.

Conventions (identical to TF's ``efficientnet_model.round_filters/round_repeats`` and
Keras applications):

* filters: ``f * width`` rounded to the nearest multiple of ``divisor`` (8), never below
  ``divisor`` and never more than 10 % below the exact product;
* repeats: ``ceil(r * depth)``;
* resolution (continuous phi only): ``224 * 1.15**phi`` rounded to the nearest multiple of 8
  (at least 32), because every stride-2 stage wants an even size down to 7x7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Per-step growth of the compound scaling rule: alpha * beta**2 * gamma**2 ~= 2, so each +1 of phi
# roughly doubles the multiply-adds.
ALPHA_DEPTH = 1.2
BETA_WIDTH = 1.1
GAMMA_RESOLUTION = 1.15
BASE_RESOLUTION = 224
DEPTH_DIVISOR = 8
RESOLUTION_MULTIPLE = 8
MIN_RESOLUTION = 32


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Scale a channel count by ``width`` and round it to a multiple of ``divisor``."""
    if filters <= 0:
        raise ValueError(f"filters must be positive, got {filters}")
    if width <= 0:
        raise ValueError(f"width multiplier must be positive, got {width}")
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never drop more than 10 %
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth``, rounding up (a stage never vanishes)."""
    if repeats <= 0:
        raise ValueError(f"repeats must be positive, got {repeats}")
    if depth <= 0:
        raise ValueError(f"depth multiplier must be positive, got {depth}")
    return int(math.ceil(repeats * depth))


def round_resolution(resolution: float, multiple: int = RESOLUTION_MULTIPLE) -> int:
    """Round an input size to the nearest multiple of ``multiple`` (at least ``MIN_RESOLUTION``)."""
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return max(MIN_RESOLUTION, int(round(resolution / multiple)) * multiple)


@dataclass(frozen=True)
class Coefficients:
    """(width, depth, resolution, dropout) of one member of the family."""

    width: float
    depth: float
    resolution: int
    dropout: float


def coefficients_for_phi(phi: float) -> Coefficients:
    """The continuous compound-scaling rule: depth 1.2^phi, width 1.1^phi, resolution 224*1.15^phi.

    Dropout follows the presets' trend (0.2 at B0, +0.05 per step of phi, clipped to [0.1, 0.5]).
    """
    if not math.isfinite(phi):
        raise ValueError(f"phi must be a finite number, got {phi}")
    return Coefficients(
        width=BETA_WIDTH**phi,
        depth=ALPHA_DEPTH**phi,
        resolution=round_resolution(BASE_RESOLUTION * GAMMA_RESOLUTION**phi),
        dropout=round(min(0.5, max(0.1, 0.2 + 0.05 * phi)), 3),
    )


# The official members, as published.
#            name       (width, depth, resolution, dropout)
PRESETS: dict[str, tuple[str, Coefficients]] = {
    "b0": ("efficientnet", Coefficients(1.0, 1.0, 224, 0.2)),
    "b1": ("efficientnet", Coefficients(1.0, 1.1, 240, 0.2)),
    "b2": ("efficientnet", Coefficients(1.1, 1.2, 260, 0.3)),
    "b3": ("efficientnet", Coefficients(1.2, 1.4, 300, 0.3)),
    "b4": ("efficientnet", Coefficients(1.4, 1.8, 380, 0.4)),
    "b5": ("efficientnet", Coefficients(1.6, 2.2, 456, 0.4)),
    "b6": ("efficientnet", Coefficients(1.8, 2.6, 528, 0.5)),
    "b7": ("efficientnet", Coefficients(2.0, 3.1, 600, 0.5)),
    "lite0": ("lite", Coefficients(1.0, 1.0, 224, 0.2)),
    "lite1": ("lite", Coefficients(1.0, 1.1, 240, 0.2)),
    "lite2": ("lite", Coefficients(1.1, 1.2, 260, 0.3)),
    "lite3": ("lite", Coefficients(1.2, 1.4, 280, 0.3)),
    "lite4": ("lite", Coefficients(1.4, 1.8, 300, 0.3)),
}

"""The quantization report: float32 against int8 on the calibration images held back from
calibration. One typed record, its reader and writer, and what it may claim.

Held-back images come with labels only when the calibration folder has class sub-folders. With
labels the report measures an accuracy drop; without them it can only count how often int8's
top-1 agrees with float32's. Both are reported as ``drop_points`` (what ``--max-int8-drop``
checks), but ``labelled`` says which, and :meth:`QuantReport.can_estimate_accuracy` says when
the images are too few for either to be a figure about the model rather than about a handful of
photos: the bundled calibration set holds back 7 images, where one disagreement is 14 points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeeff.core import records

# Below this many held-back images the report states agreement counts, not a drop estimate: the
# standard error of a share measured on n images is up to 50/sqrt(n) points (about 9 points at
# 30), so fewer images cannot tell a sound quantization from a broken one.
MIN_IMAGES_FOR_ESTIMATE = 30

HOW_TO_MEASURE = ("export with --calib on a folder of labelled photos (one sub-folder per class) "
                  "or run 'edgeeff eval' on one")


@dataclass(frozen=True)
class QuantReport:
    """float32 vs int8 on ``images`` held-back images (softmax scores compared)."""

    images: int
    top1_agreement: float  # share of images where both models give the same top-1
    mean_abs_score_error: float
    max_abs_score_error: float
    labelled: bool  # the held-back images carry their true class
    labels_note: str = ""  # where the labels came from, or why there were none
    float_top1: float | None = None  # with labels
    int8_top1: float | None = None
    quantizer: str = ""
    worst_layers: list[dict] = field(default_factory=list)  # export --debug

    def __post_init__(self) -> None:
        if self.labelled and (self.float_top1 is None or self.int8_top1 is None):
            raise ValueError("a labelled report needs float_top1 and int8_top1")

    @property
    def agreeing(self) -> int:
        return round(self.top1_agreement * self.images)

    @property
    def drop_points(self) -> float:
        """float -> int8 top-1 accuracy drop with labels; without, the share of images whose
        top-1 differs (100 - agreement %). Percentage points; 0 with no images."""
        if not self.images:
            return 0.0
        if self.labelled:
            return round(100.0 * (self.float_top1 - self.int8_top1), 2)
        return round(100.0 * (1.0 - self.top1_agreement), 2)

    @property
    def basis(self) -> str:
        if self.labelled:
            return f"top-1 accuracy, labels {self.labels_note or 'given'}"
        return ("top-1 agreement float vs int8 (100 - agreement %): no labels"
                + (f" ({self.labels_note})" if self.labels_note else ""))

    @property
    def can_estimate_accuracy(self) -> bool:
        """Whether the drop is a figure about the model (enough images to tell)."""
        return self.images >= MIN_IMAGES_FOR_ESTIMATE

    def summary(self) -> str:
        """One line for the export log: what was measured and what it can say."""
        agree = f"int8 agreed with float32 on {self.agreeing} of {self.images} held-back images"
        if self.labelled:
            line = (f"int8 top-1 drop: {self.drop_points:g} points on {self.images} held-back "
                    f"images (float32 {self.float_top1:.1%}, int8 {self.int8_top1:.1%}); {agree}")
        else:
            line = f"{agree} (unlabelled)"
        if not self.can_estimate_accuracy:
            line += (f"; {self.images} images are too few to estimate the accuracy drop "
                     f"(fewer than {MIN_IMAGES_FOR_ESTIMATE}): {HOW_TO_MEASURE}")
        return line

    def to_dict(self) -> dict:
        """The model card's ``quantization`` section."""
        d = {"images": self.images, "top1_agreement": round(self.top1_agreement, 4),
             "agreeing": self.agreeing,
             "mean_abs_score_error": round(self.mean_abs_score_error, 6),
             "max_abs_score_error": round(self.max_abs_score_error, 6),
             "scores": "softmax probabilities", "labelled": self.labelled,
             "labels_note": self.labels_note,
             "top1_drop_points": self.drop_points, "drop_basis": self.basis,
             "can_estimate_accuracy": self.can_estimate_accuracy,
             "quantizer": self.quantizer}
        if self.labelled:
            d["float_top1"] = round(self.float_top1, 4)
            d["int8_top1"] = round(self.int8_top1, 4)
        if self.worst_layers:
            d["worst_layers"] = self.worst_layers
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantReport:
        return cls(**records.known(cls, d))

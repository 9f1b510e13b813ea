"""The one record of a training recipe's settings, and which recipe a spec gets.

Every training path reads its numbers from a :class:`Recipe`: the cached-feature recipe for
pretrained Lite0/1/2 at their own resolution (:mod:`.cached`), the full, distilled recipe for
every other network (:mod:`.full`), and both under ``--distribute``. The CLI's flags override
fields of the defaults here with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from edgeeff.core.arch import ModelSpec, preset_spec
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.zoo import source_for

CACHED, DISTILL = "cached", "distill"
KINDS = (CACHED, DISTILL)


@dataclass(frozen=True)
class Recipe:
    """One recipe's settings; README "Transfer learning" and docs/usage.md say why each value.

    Both kinds: ``epochs`` are passes over all ``views`` of every training image (the best
    validation epoch is kept); the learning rate warms up linearly over the first ``warmup`` of
    the steps to ``lr``, then follows a cosine to zero (AdamW, ``weight_decay``); the label is
    smoothed by ``label_smoothing``; ``dropout`` replaces the spec's rate before the head (None:
    the spec's own); ``seed`` fixes every random choice (views, shuffle, init, dropout).

    ``cached`` only: ``mixup`` is the Beta(a, a) parameter of mixup on the cached features
    (0: off). Under ``--distribute`` it trains on full images in two phases (new head at ``lr``,
    then the top stages at ``lr * fine_tune_lr_scale``) with early stopping after ``patience``
    epochs without a better validation accuracy.

    ``distill`` only: every layer trains (BatchNorm in training mode) on ``views`` fixed views of
    each photo (the centre square, then random resized crops of ``crop_scale`` of its area and
    coin-flip mirrors); the teacher sees each view once, at its own resolution, and the loss is
    ``alpha`` * KL(teacher_T || student_T) * T^2 + (1 - alpha) * CE(smoothed label), with
    T = ``temperature``.
    """

    kind: str = CACHED
    epochs: int = 2
    views: int = 4
    batch: int = 64
    lr: float = 1e-3
    warmup: float = 0.1
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    mixup: float = 0.2
    dropout: float | None = 0.5
    seed: int = 0
    # --distribute's full-image two-phase form of the cached recipe
    fine_tune_lr_scale: float = 0.1
    patience: int = 3
    # distillation
    temperature: float = 2.0
    alpha: float = 0.9
    crop_scale: tuple[float, float] = (0.25, 1.0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EdgeeffError(f"unknown recipe {self.kind!r} (one of {', '.join(KINDS)})")
        for name in ("epochs", "views", "batch"):
            if getattr(self, name) < 1:
                raise EdgeeffError(f"--{name.replace('batch', 'batch-size')} must be >= 1")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise EdgeeffError("distillation needs 0 <= alpha <= 1 and temperature > 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        return d


# The cached-feature recipe (pretrained Lite0/1/2 at their own resolution).
CACHED_RECIPE = Recipe()
# The same networks under --distribute: full images every epoch, two phases (Keras' fine-tuning
# guide), so more and smaller steps than on cached features.
CACHED_DISTRIBUTED = replace(CACHED_RECIPE, epochs=10, batch=32, warmup=0.0, mixup=0.0)
# Networks without weights of their own: every layer from the inherited initialisation,
# distilled from a teacher over many fixed views (a teacher's soft targets on a view are worth
# more than a hard label, and computing them once per view keeps the teacher out of the
# epochs). Small inputs want a higher rate than fine-tuning (every layer moves from a sliced
# start) and no mixup (the teacher's targets already carry the uncertainty); dropout stays
# the spec's own.
DISTILL_RECIPE = Recipe(kind=DISTILL, epochs=3, views=16, batch=64, lr=3e-3, warmup=0.05,
                        weight_decay=4e-3, label_smoothing=0.1, mixup=0.0, dropout=None,
                        temperature=2.0, alpha=0.9, crop_scale=(0.25, 1.0))
@dataclass(frozen=True)
class Proxy:
    """``edgeeff tune``'s cheap ranking of networks without weights of their own: every
    candidate's whole network trained with ``recipe`` (the distilled recipe, shortened: few
    views, few epochs) on at most ``per_class`` training photos of each class (a seeded draw),
    from views and teacher outputs computed once and shared by every candidate; then its
    top-1 on every validation photo. ``tune --budget-minutes`` bounds the whole ranking."""

    recipe: Recipe
    per_class: int

    def __post_init__(self) -> None:
        if self.recipe.kind != DISTILL:
            raise EdgeeffError("tune's proxy trains with the distilled recipe")
        if self.per_class < 1:
            raise EdgeeffError("tune's proxy needs at least one photo per class")

    def to_dict(self) -> dict:
        return {"recipe": self.recipe.to_dict(), "per_class": self.per_class}


# tune's ranking: a quarter of the distilled recipe's views per photo and one epoch less, on
# a few dozen photos per class: a few minutes per candidate at most, so that the five
# candidates fit tune's default ranking budget.
PROXY = Proxy(replace(DISTILL_RECIPE, epochs=2, views=4), per_class=40)
DEFAULTS = {(CACHED, False): CACHED_RECIPE, (CACHED, True): CACHED_DISTRIBUTED,
            (DISTILL, False): DISTILL_RECIPE, (DISTILL, True): DISTILL_RECIPE}


def defaults(kind: str, distribute: bool = False) -> Recipe:
    """The default :class:`Recipe` of ``kind``, on one host or under ``--distribute``."""
    return DEFAULTS[(kind, distribute)]


@dataclass(frozen=True)
class Choice:
    """Which recipe ``train`` runs for a spec, and the one-line reason it logs."""

    kind: str
    reason: str


def choose(spec: ModelSpec, requested: str = "auto") -> Choice:
    """``cached`` for a pretrained Lite0/1/2 at its own resolution (its frozen stages are
    ImageNet features worth keeping), ``distill`` for every other spec (a microcontroller pick,
    a size above Lite2, or a pretrained architecture at another resolution: nothing of it was
    trained at that size, so every layer trains). ``requested`` other than ``auto`` wins."""
    src = source_for(spec)
    native = src is not None and spec.family == "lite" and \
        preset_spec(src).resolution == spec.resolution
    if requested != "auto":
        if requested not in KINDS:
            raise EdgeeffError(f"unknown recipe {requested!r} (auto, {', '.join(KINDS)})")
        return Choice(requested, "asked for with --recipe")
    if native:
        return Choice(CACHED, f"{spec.name} is pretrained {src} at its own resolution "
                              f"({spec.resolution} px): stages 1-5 stay ImageNet's, frozen")
    why = (f"{src}'s architecture at {spec.resolution} px, not its own "
           f"{preset_spec(src).resolution} px" if src else
           "no pretrained weights of its own (inherited, sliced ones at most)")
    return Choice(DISTILL, f"{spec.name}: {why}, so every layer trains, distilled from a "
                           "teacher")

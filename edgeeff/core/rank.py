"""Rank weight-bearing models by accuracy: the pretrained backbones at every input size, and
models ``edgeeff train`` produced, by the top-1 they measured.

The phi search (:mod:`edgeeff.core.fit`) picks the largest model that fits; this picks the
most accurate one that fits, because more MACs spent on a backbone far below its native
resolution buy less accuracy than fewer MACs near it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from edgeeff.core import records, specfile
from edgeeff.core.accuracy import Prediction
from edgeeff.core.arch import preset_spec
from edgeeff.core.budget import Budgets, Candidate, FitResult, Measure, NothingFits, evaluate, shortfalls
from edgeeff.core.errors import EdgeeffError, FieldError
from edgeeff.core.targets import Device
from edgeeff.core.zoo import AVAILABLE, WeightSource

PRETRAINED_MIN_RESOLUTION = 96
PRETRAINED_ABOVE_NATIVE = 16  # the accuracy curves are measured up to native + 16 px


def pretrained_candidates(device: Device, budgets: Budgets, num_classes: int = 1000,
                          measure: Measure | None = None) -> list[Candidate]:
    """Every pretrained backbone (lite0/1/2) at every multiple of 8 px from 96 px to 16 px
    above its native resolution (convolution weights do not depend on the input size)."""
    out = []
    for name in AVAILABLE:
        native = preset_spec(name).resolution
        for r in range(PRETRAINED_MIN_RESOLUTION, native + PRETRAINED_ABOVE_NATIVE + 1, 8):
            out.append(evaluate(preset_spec(name, num_classes, r), device, budgets, measure))
    return out


def trained_candidate(path: str, device: Device, budgets: Budgets,
                      measure: Measure | None = None) -> Candidate:
    """A model ``edgeeff train`` produced, ranked by the top-1 it measured on its validation
    images (recorded in its spec file)."""
    doc = specfile.read(path)
    spec, t = doc.spec, doc.trained
    if t is None or t.top1 is None:
        raise EdgeeffError(f"{path}: not a spec file written by 'edgeeff train' "
                           "(no measured accuracy)")
    top1 = t.top1
    basis = t.top1_basis or "measured by edgeeff train on its validation images"
    c = evaluate(spec, device, budgets, measure)
    return replace(c, weights=WeightSource.trained(Path(path).resolve().parent),
                   accuracy=Prediction(top1, top1, basis))


def pick_pretrained(device: Device, budgets: Budgets, num_classes: int = 1000,
                   family: str | None = None, trained: tuple[str, ...] = (),
                   pretrained: bool = True, measure: Measure | None = None) -> FitResult:
    """The pretrained candidate with the highest predicted top-1 that meets every budget.

    More MACs spent on a backbone far below its native resolution buy less accuracy than
    fewer MACs near it (Lite2 at 160 px loses to Lite0 at 192 px), so candidates are ranked
    by predicted int8 ImageNet top-1 (:mod:`edgeeff.core.accuracy`), not by MACs. The result
    names the runner-up, and the binding budget is what stops the next more accurate one.
    """
    if pretrained and family not in (None, "lite"):
        raise FieldError("{pretrained} weights exist only for the lite family", "pretrained")
    cands = pretrained_candidates(device, budgets, num_classes, measure) if pretrained else []
    cands += [trained_candidate(p, device, budgets, measure) for p in trained]
    if not cands:
        raise FieldError("no weight-bearing candidates: give {pretrained} or {trained} SPEC",
                         "pretrained", "trained")
    ranked = sorted(cands, key=lambda c: (-c.top1, c.cost.macs))
    fitting = [c for c in ranked if c.fits]
    if not fitting:
        smallest = min(cands, key=lambda c: c.cost.macs)
        raise NothingFits(device, "lite", smallest, shortfalls(smallest, budgets),
                          f"pretrained {smallest.spec.preset} at {smallest.spec.resolution}px")
    best = fitting[0]
    runner = fitting[1] if len(fitting) > 1 else None
    better = [c for c in ranked if c.top1 > best.top1 and not c.fits]
    if better:
        nxt = min(better, key=lambda c: c.cost.macs)  # the cheapest more accurate candidate
        binding = "+".join(nxt.violations)
    else:
        binding = "none (the most accurate candidate fits)"
    shown = {id(c) for c in (best, runner)}
    rows = [best] + ([runner] if runner else [])
    for name in AVAILABLE:  # per backbone: its best fitting size and the next size up
        own = [c for c in cands if c.weights == WeightSource.imagenet(name)]
        fit_own = [c for c in own if c.fits]
        top = max(fit_own, key=lambda c: c.top1) if fit_own else None
        nxt_up = next((c for c in own if not c.fits and (top is None or c.spec.resolution >
                                                             top.spec.resolution)), None)
        for c in (top, nxt_up):
            if c is not None and id(c) not in shown:
                rows.append(c)
                shown.add(id(c))
    rows += [c for c in cands if c.weights is not None and c.weights.is_trained
             and id(c) not in shown]
    rows.sort(key=lambda c: c.cost.macs)
    return FitResult(best, binding, rows, device, budgets, runner_up=runner,
                     candidates=tuple(cands))


class NoPretrainedFits(EdgeeffError):
    """No pretrained candidate meets ``device``'s budgets (``tune`` then ranks networks without
    weights of their own: :func:`edgeeff.core.fit.weightless_shortlist`)."""

    def __init__(self, device: Device):
        super().__init__(f"no pretrained candidate meets {device.key}'s budgets")
        self.device = device


def tune_shortlist(device: Device, budgets: Budgets, num_classes: int,
                   per_backbone: int = 2, measure: Measure | None = None) -> list[Candidate]:
    """What ``edgeeff tune`` trains: of the pretrained candidates that meet every budget, each
    backbone's ``per_backbone`` largest resolutions spaced 16 px or more apart (a few pixels
    change little), and always fit's own pick; ordered by predicted top-1, best first (fit's
    pick first)."""
    cands = [c for c in pretrained_candidates(device, budgets, num_classes, measure) if c.fits]
    if not cands:
        raise NoPretrainedFits(device)
    pick = max(cands, key=lambda c: (c.top1, -c.cost.macs))
    chosen = [pick]
    for name in AVAILABLE:
        src = WeightSource.imagenet(name)
        own = sorted((c for c in cands if c.weights == src), key=lambda c: -c.spec.resolution)
        taken = [c for c in chosen if c.weights == src]
        for c in own:
            if len(taken) >= per_backbone:
                break
            if all(abs(c.spec.resolution - t.spec.resolution) >= 16 for t in taken):
                taken.append(c)
                chosen.append(c)
    return sorted(chosen, key=lambda c: (c is not pick, -c.top1, c.cost.macs))


# tune keeps fit's pick unless a candidate's ranking top-1 beats it by more than this many
# standard errors of the paired difference (one-sided, 95 %): on a few hundred validation images
# the cheap ranking moves by a point or two from one candidate to the next on noise alone
TUNE_MARGIN_Z = 1.645
TUNE_PICK_RULE = (f"fit's pick unless a candidate's ranking top-1 beats it by more than "
                  f"{TUNE_MARGIN_Z:g} standard errors of the paired difference")


def paired_gain(hits: list[bool], base: list[bool]) -> tuple[float, float]:
    """(mean, standard error) of ``hits - base`` over the same images: how much one model's
    top-1 beats another's, and how far that figure is to be trusted (the paired test that
    McNemar's is a form of: only the images the two disagree on count)."""
    if len(hits) != len(base) or not hits:
        raise ValueError("paired_gain needs two equally long, non-empty hit lists")
    d = [int(a) - int(b) for a, b in zip(hits, base)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else float("inf")
    return mean, (var / n) ** 0.5


@dataclass(frozen=True)
class TuneRow:
    """One candidate ``tune`` ranked, as ``tune.json`` lists it (this module reads and writes
    it: :meth:`to_dict`, :meth:`from_dict`).

    ``rank_top1`` is the ranking's validation top-1 (None: not reached within the ranking's
    time budget) and ``seconds`` what ranking it took; ``vs_fit_points`` and
    ``vs_fit_se_points`` its paired gain over fit's pick and the standard error
    (:func:`tune_pick`; None where not computed). ``flash_bytes`` and ``ram_bytes`` are the
    figures ``fit``'s budgets checked (:class:`~edgeeff.core.budget.Candidate`). ``val_top1``
    and ``int8_top1``: the pick's after its full training (float, and the int8 export; None
    for every other row, and ``int8_top1`` where no validation folder was given)."""

    name: str
    preset: str | None
    resolution: int
    latency_ms: float
    macs: int
    imagenet_top1_predicted: float | None = None  # pretrained candidates only
    rank_top1: float | None = None
    seconds: float | None = None
    phi: float | None = None
    head: str = "fixed"  # the top conv's width: "fixed" (1280) or "scaled" with width
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    vs_fit_points: float | None = None
    vs_fit_se_points: float | None = None
    val_top1: float | None = None
    int8_top1: float | None = None

    @classmethod
    def of(cls, c: Candidate) -> TuneRow:
        """The row of a candidate, not yet ranked."""
        s = c.spec
        return cls(s.name, s.preset, s.resolution, round(c.latency_ms, 2), c.cost.macs,
                   None if c.top1 is None else round(c.top1, 1), phi=s.phi,
                   head="scaled" if s.scaled_head else "fixed", flash_bytes=c.flash_bytes,
                   ram_bytes=c.ram_bytes)

    @property
    def trained(self) -> bool:
        return self.val_top1 is not None

    def to_dict(self) -> dict:
        """``tune.json``'s form: the paired gain only where computed, the trained figures only
        on the trained pick (the keys earlier versions wrote, and the flash/RAM fields)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.vs_fit_points is None:
            del d["vs_fit_points"], d["vs_fit_se_points"]
        if not self.trained:
            del d["val_top1"], d["int8_top1"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TuneRow:
        """A row of ``tune.json`` (older files lack the newer fields: they stay None)."""
        return cls(**records.known(cls, d))


def tune_pick(rows: list[TuneRow], hits: list[list[bool] | None],
              z: float = TUNE_MARGIN_Z) -> tuple[list[TuneRow], int]:
    """The candidate ``tune`` trains fully (:data:`TUNE_PICK_RULE`); ``rows[0]`` is fit's pick,
    ``hits[i]`` row i's per-image validation hits (None: not ranked).

    Returns the rows, each ranked one with ``vs_fit_points`` and ``vs_fit_se_points`` (its
    paired gain over fit's pick, in points, and the standard error), and the pick's index:
    the best-ranked row whose gain exceeds ``z`` standard errors (ties: the lower latency);
    fit's pick when none does, and the best-ranked row when fit's pick was not ranked.
    """
    def best(ix):
        return max(ix, key=lambda i: (rows[i].rank_top1, -rows[i].latency_ms))

    ranked = [i for i, h in enumerate(hits) if h is not None]
    if not ranked:
        raise ValueError("no candidate was ranked")
    if hits[0] is None:
        return list(rows), best(ranked)
    out, winners = list(rows), []
    for i in ranked:
        gain, se = paired_gain(hits[i], hits[0])
        out[i] = replace(rows[i], vs_fit_points=round(100 * gain, 2),
                         vs_fit_se_points=round(100 * se, 2))
        if i and gain > 0 and gain > z * se:
            winners.append(i)
    return out, (best(winners) if winners else 0)

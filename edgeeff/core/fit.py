"""Pick the largest compound-scaling coefficient phi whose real (rounded) model fits a device.

Every budget (MACs, activation RAM, weight flash, estimated latency) grows monotonically with
phi, because width, depth and resolution and their rounding rules all do. Feasibility is
therefore a threshold in phi and a bisection over a 0.01 grid finds it in about a dozen cost
evaluations: milliseconds, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import replace

from edgeeff.core.arch import expand, phi_spec
from edgeeff.core.budget import Budgets, Candidate, FitResult, Measure, NothingFits, evaluate, shortfalls
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.rank import fit_pretrained
from edgeeff.core.targets import Device

# The class count assumed where the user gave none (no --num-classes, no --data) and no
# pretrained model fits the device: its pick has no ImageNet weights, so ImageNet's 1,000
# classes describe no task; a small task (a few to a dozen classes) is what such boards run.
ASSUMED_CLASSES = 10
PHI_STEP = 0.01
PHI_MIN = -10.0  # ~56 px input, every stage a single block
PHI_MAX = 8.0  # beyond B7


def task_classes(device: Device, budgets: Budgets, num_classes: int | None) -> tuple[int, str]:
    """(class count, one line saying what was assumed, or ""): ``num_classes`` where given;
    else ImageNet's 1,000 where a pretrained model fits the device (its weights classify
    those), else :data:`ASSUMED_CLASSES`, said in the line."""
    if num_classes is not None:
        return num_classes, ""
    try:
        fit_pretrained(device, budgets, 1000)
        return 1000, ""
    except NothingFits:
        return ASSUMED_CLASSES, (
            f"assumed {ASSUMED_CLASSES} classes: no pretrained model fits {device.name}, so "
            "its pick has no ImageNet weights and is not sized for ImageNet's 1,000; give "
            "--num-classes or --data")


def fit(device: Device, budgets: Budgets, family: str | None = None,
        num_classes: int | None = 1000, measure: Measure | None = None,
        head: str | None = None) -> FitResult:
    """The largest phi on the 0.01 grid whose model meets every budget.

    Without ``family`` the device's preferred family is searched first; when nothing of it
    fits, the other family is tried (the efficientnet family scales its head with width,
    which is what lets a 1000-class model into 1 MB of flash), and the result says so.
    ``num_classes`` None: the user's task is unknown, see :func:`task_classes` (the result's
    ``assumed`` says what was assumed). ``head`` (see ``ModelSpec.head``) None: on a
    microcontroller the lite family's head scales with width where that fits a larger phi
    than the fixed 1280-wide head (:func:`_fit_lite_mcu`).
    """
    num_classes, assumed = task_classes(device, budgets, num_classes)
    if family is not None:
        res = _fit_any(device, budgets, family, num_classes, measure, head)
    else:
        try:
            res = _fit_any(device, budgets, device.family, num_classes, measure, head)
        except NothingFits as first:
            other = next(f for f in ("lite", "efficientnet") if f != device.family)
            try:
                res = _fit_any(device, budgets, other, num_classes, measure, head)
            except NothingFits:
                raise first from None
            res = replace(res, note=f"no {device.family} model fits ({first.shortfall}); "
                                    f"chose the {other} family instead")
    res = replace(res, assumed=assumed)
    if res.weightless:  # name the best pretrained model within the same budgets
        try:
            alt = fit_pretrained(device, budgets, num_classes, measure=measure)
            # its candidates too: --plot draws them (already evaluated, measured with --measure)
            res = replace(res, alternative=alt.chosen, candidates=alt.candidates)
        except NothingFits:
            pass
    return res


def _fit_any(device: Device, budgets: Budgets, fam: str, num_classes: int,
             measure: Measure | None, head: str | None) -> FitResult:
    if head is None and fam == "lite" and device.kind == "mcu":
        return _fit_lite_mcu(device, budgets, num_classes, measure)
    return _fit_family(device, budgets, fam, num_classes, measure, head)


def _fit_lite_mcu(device: Device, budgets: Budgets, num_classes: int,
                  measure: Measure | None) -> FitResult:
    """A microcontroller's lite pick: the fixed 1280-wide head, or the head scaled with width
    where that fits a larger phi (flash-bound picks: the head's 1x1 conv and the classifier
    behind it are much of the flash; at the same phi the fixed head is kept, the wider one)."""
    try:
        fixed = _fit_family(device, budgets, "lite", num_classes, measure, "fixed")
    except NothingFits as e:
        fixed, first = None, e
    try:
        scaled = _fit_family(device, budgets, "lite", num_classes, measure, "scaled")
    except NothingFits:
        if fixed is None:
            raise first from None
        return fixed
    if fixed is not None and fixed.chosen.spec.phi >= scaled.chosen.spec.phi:
        return fixed
    was = ("no phi fits with the fixed 1280-wide head" if fixed is None
           else f"the fixed 1280-wide head fits only phi {fixed.chosen.spec.phi:+.2f}")
    return replace(scaled, note=f"head scaled with width to {expand(scaled.chosen.spec).top_filters} "
                                f"filters: phi {scaled.chosen.spec.phi:+.2f}; {was}")


def _fit_family(device: Device, budgets: Budgets, fam: str, num_classes: int,
                measure: Measure | None = None, head: str | None = None) -> FitResult:
    if num_classes < 1:
        raise EdgeeffError(f"--num-classes must be >= 1, got {num_classes}")
    cache: dict[int, Candidate] = {}

    def at(k: int) -> Candidate:
        if k not in cache:
            cache[k] = evaluate(phi_spec(round(k * PHI_STEP, 2), fam, num_classes, head),
                                device, budgets, measure)
        return cache[k]

    lo, hi = round(PHI_MIN / PHI_STEP), round(PHI_MAX / PHI_STEP)
    if not at(lo).fits:
        smallest = at(lo)
        hint = ""
        if "flash" in smallest.violations:
            hint = "; fewer classes (--num-classes) shrink the classifier"
        raise NothingFits(device, fam, smallest, shortfalls(smallest, budgets),
                          f"the smallest {fam} candidate (phi={PHI_MIN:g}, "
                          f"{smallest.spec.resolution}px, {num_classes} classes)", hint)
    if at(hi).fits:
        # nothing binds only at the edge of the search range: say so
        best, binding = hi, f"none (phi reached the top of the search range, {PHI_MAX:+g})"
    else:
        while hi - lo > 1:  # invariant: at(lo) fits, at(hi) does not
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if at(mid).fits else (lo, mid)
        best, binding = lo, "+".join(at(hi).violations)
    chosen = at(best)
    steps = (-100, -50, -25, 0, 1, 25, 50)
    ks = sorted({min(max(best + s, round(PHI_MIN / PHI_STEP)), round(PHI_MAX / PHI_STEP))
                 for s in steps})
    return FitResult(chosen, binding, [at(k) for k in ks], device, budgets)

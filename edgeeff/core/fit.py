"""Pick the largest compound-scaling coefficient phi whose real (rounded) model fits a device.

Every budget (MACs, activation RAM, weight flash, estimated latency) grows monotonically with
phi, because width, depth and resolution and their rounding rules all do. Feasibility is
therefore a threshold in phi and a bisection over a 0.01 grid finds it in about a dozen cost
evaluations: milliseconds, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import replace

from edgeeff.core.arch import phi_spec
from edgeeff.core.budget import Budgets, Candidate, FitResult, Measure, NothingFits, evaluate, shortfalls
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.rank import fit_pretrained
from edgeeff.core.targets import Device

PHI_STEP = 0.01
PHI_MIN = -10.0  # ~56 px input, every stage a single block
PHI_MAX = 8.0  # beyond B7


def fit(device: Device, budgets: Budgets, family: str | None = None,
        num_classes: int = 1000, measure: Measure | None = None) -> FitResult:
    """The largest phi on the 0.01 grid whose model meets every budget.

    Without ``family`` the device's preferred family is searched first; when nothing of it
    fits, the other family is tried (the lite family keeps its 1280-wide head at every phi,
    the efficientnet family scales it down, which is what lets a 1000-class model into 1 MB of
    flash), and the result says so.
    """
    if family is not None:
        res = _fit_family(device, budgets, family, num_classes, measure)
    else:
        try:
            res = _fit_family(device, budgets, device.family, num_classes, measure)
        except NothingFits as first:
            other = next(f for f in ("lite", "efficientnet") if f != device.family)
            try:
                res = _fit_family(device, budgets, other, num_classes, measure)
            except NothingFits:
                raise first from None
            res = replace(res, note=f"no {device.family} model fits ({first.shortfall}); "
                                    f"chose the {other} family instead")
    if res.weightless:  # name the best pretrained model within the same budgets
        try:
            alt = fit_pretrained(device, budgets, num_classes, measure=measure)
            # its candidates too: --plot draws them (already evaluated, measured with --measure)
            res = replace(res, alternative=alt.chosen, candidates=alt.candidates)
        except NothingFits:
            pass
    return res


def _fit_family(device: Device, budgets: Budgets, fam: str, num_classes: int,
                measure: Measure | None = None) -> FitResult:
    if num_classes < 1:
        raise EdgeeffError(f"--num-classes must be >= 1, got {num_classes}")
    cache: dict[int, Candidate] = {}

    def at(k: int) -> Candidate:
        if k not in cache:
            cache[k] = evaluate(phi_spec(round(k * PHI_STEP, 2), fam, num_classes), device,
                                budgets, measure)
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

"""Pick the largest compound-scaling coefficient phi whose real (rounded) model fits a device.

Every budget (MACs, activation RAM, weight flash, estimated latency) grows monotonically with
phi, because width, depth and resolution and their rounding rules all do. Feasibility is
therefore a threshold in phi and a bisection over a 0.01 grid finds it in about a dozen cost
evaluations: milliseconds, no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import replace

from edgeeff.core.arch import expand, phi_spec
from edgeeff.core.budget import (
    BudgetedMeasure,
    Budgets,
    Candidate,
    FitResult,
    Measure,
    NothingFits,
    evaluate,
    shortfalls,
)
from edgeeff.core.errors import FieldError
from edgeeff.core.rank import pick_pretrained
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
        pick_pretrained(device, budgets, 1000)
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
            alt_measure = measure
            if isinstance(measure, BudgetedMeasure):  # nothing more is timed for the aside
                def alt_measure(s, _m=measure):
                    t = _m.cached(s)
                    return None if t is None else t.p50_ms
            alt = pick_pretrained(device, budgets, num_classes, measure=alt_measure)
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
    if isinstance(measure, BudgetedMeasure):
        return _fit_measured(device, budgets, fam, num_classes, measure, head)
    if num_classes < 1:
        raise FieldError(f"{{num_classes}} must be >= 1, got {num_classes}", "num_classes")
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
            hint = "; fewer classes ({num_classes}) shrink the classifier"
        raise NothingFits(device, fam, smallest, shortfalls(smallest, budgets),
                          f"the smallest {fam} candidate (phi={PHI_MIN:g}, "
                          f"{smallest.spec.resolution}px, {num_classes} classes)", hint,
                          ("num_classes",) if hint else ())
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


def search_bound(n: int) -> int:
    """The most candidates :func:`_fit_measured` times over an interval of ``n`` grid steps:
    the model's guess, then an exponential search outwards from it and a bisection, each at
    most ceil(log2 n) timings, and the smallest candidate when none timed fits."""
    return 2 + 2 * max(math.ceil(math.log2(max(n, 2))), 1)


def _fit_measured(device: Device, budgets: Budgets, fam: str, num_classes: int,
                  timer: BudgetedMeasure, head: str | None = None) -> FitResult:
    """``fit --measure``: the model's search first (no timing), then as few timed candidates
    as the latency budget needs.

    Without a latency budget only the pick is timed. With one, the measured latency decides:
    the first candidate timed is the profile's pick; each timing rescales the profile's
    prediction (measured / predicted there) for the next guess, stepping outwards from it
    with doubling steps until one candidate is measured over the budget and one under, then
    bisecting between them (at most :func:`search_bound` timings). Neighbouring phi that round
    to one network are timed once. When the time budget is spent the pick is the largest
    candidate measured to fit, and the summary says the search stopped there."""
    kmin, kmax = round(PHI_MIN / PHI_STEP), round(PHI_MAX / PHI_STEP)
    # the largest phi the static budgets allow (NothingFits when not even the smallest does)
    top = _fit_family(device, replace(budgets, max_latency_ms=None), fam, num_classes, head=head)
    lim = budgets.max_latency_ms
    specs: dict[int, object] = {}

    def spec(k: int):
        if k not in specs:
            specs[k] = phi_spec(round(k * PHI_STEP, 2), fam, num_classes, head)
        return specs[k]

    def k_of(c: Candidate) -> int:
        return round(c.spec.phi / PHI_STEP)

    if lim is None:
        timer.bound = 1
        best = k_of(top.chosen)
        timer.timing(spec(best), share=1.0)
        return _measured_result(device, budgets, fam, num_classes, timer, best, top.binding, head)
    try:
        first = k_of(_fit_family(device, budgets, fam, num_classes, head=head).chosen)  # model's pick
    except NothingFits:
        first = kmin
    static_hi = k_of(top.chosen) + 1  # the first step the static budgets rule out (or kmax+1)
    lo, hi = kmin - 1, static_hi  # invariant: lo measured to fit (or below), hi does not fit
    n0 = hi - lo
    timer.bound = search_bound(n0)
    gallop_max = max(math.ceil(math.log2(max(n0, 2))), 1)
    pred: dict[int, float] = {}

    def predicted(k: int) -> float:
        if k not in pred:
            pred[k] = device.latency_ms(spec(k))
        return pred[k]

    def guess(r: float) -> int:
        """The largest k in (lo, hi) whose prediction, rescaled by r, is within the budget."""
        a, b = lo, hi
        while b - a > 1:
            m = (a + b) // 2
            a, b = (m, b) if predicted(m) * r <= lim else (a, m)
        return min(max(a, lo + 1), hi - 1)

    g = min(max(first, lo + 1), hi - 1)
    step, gallops, seen = 0, 0, set()
    while hi - lo > 1:
        t = timer.timing(spec(g))
        if t is None:  # the time budget is spent
            break
        fits = t.p50_ms <= lim
        seen.add(fits)
        lo, hi = (g, hi) if fits else (lo, g)
        if hi - lo <= 1:
            break
        if len(seen) == 2 or gallops >= gallop_max:
            g = (lo + hi) // 2  # bracketed (or galloped long enough): bisect
            continue
        gallops += 1  # outwards from the guess, rescaled by what this timing showed
        c = guess(t.p50_ms / max(predicted(g), 1e-9))
        step = max(2 * step, 1)
        g = min(max(c, lo + step), hi - 1) if fits else max(min(c, hi - step), lo + 1)
    if lo < kmin:  # nothing timed fits: the smallest candidate decides (timed past the budget)
        t = timer.timing(spec(kmin), share=1.0, force=True)
        if t.p50_ms > lim:
            smallest = evaluate(spec(kmin), device, budgets, lambda s: t.p50_ms)
            raise NothingFits(device, fam, smallest, shortfalls(smallest, budgets),
                              f"the smallest {fam} candidate (phi={PHI_MIN:g}, measured)", "")
        lo = kmin
    _check_decidable(timer, spec(lo), spec(hi) if hi <= kmax else None, lim)
    binding = top.binding if hi >= static_hi else "latency"
    return _measured_result(device, budgets, fam, num_classes, timer, lo, binding, head)


def _check_decidable(timer: BudgetedMeasure, lo_spec, hi_spec, lim: float) -> None:
    """Warn when the two candidates either side of the latency budget were timed with frames
    spread so wide (p10..p90) that both could lie on either side of it."""
    a = timer.cached(lo_spec)
    b = timer.cached(hi_spec) if hi_spec is not None else None
    if a is None or b is None:
        return
    if a.p90_ms > lim or b.p10_ms <= lim:
        timer.warning = (f"the last two candidates ({lo_spec.name}: {a.p10_ms:.3g}..{a.p90_ms:.3g}"
                         f" ms, {hi_spec.name}: {b.p10_ms:.3g}..{b.p90_ms:.3g} ms, p10..p90) "
                         f"straddle the {lim:g} ms budget within their spread: the timings "
                         "cannot decide between them; time again on a quieter device or "
                         "with fewer --threads")


def _measured_result(device: Device, budgets: Budgets, fam: str, num_classes: int,
                     timer: BudgetedMeasure, best: int, binding: str,
                     head: str | None = None) -> FitResult:
    """The result around the pick ``best``: candidates timed during the search carry their
    measured latency, the others the profile's prediction (nothing more is timed)."""
    def cached(s):
        t = timer.cached(s)
        return None if t is None else t.p50_ms

    def at(k: int) -> Candidate:
        return evaluate(phi_spec(round(k * PHI_STEP, 2), fam, num_classes, head), device,
                        budgets, cached)

    chosen = at(best)
    steps = (-100, -50, -25, 0, 1, 25, 50)
    ks = sorted({min(max(best + s, round(PHI_MIN / PHI_STEP)), round(PHI_MAX / PHI_STEP))
                 for s in steps})
    return FitResult(chosen, binding, [at(k) for k in ks], device, budgets)


# `tune`'s candidates on a device no pretrained model fits (a microcontroller): resolutions
# around fit's pick, in the order they are taken (fit's pick and its resolution with the other
# head first), and how many at most (each is trained briefly to rank it, so few).
TUNE_RESOLUTION_STEPS = (-16, 16, -32, 32)
TUNE_WEIGHTLESS_COUNT = 5


def _largest_at(device: Device, budgets: Budgets, fam: str, num_classes: int,
                resolution: int, head: str) -> Candidate | None:
    """The largest phi on the grid whose network, at input ``resolution`` and with ``head``,
    meets every budget (None when not even PHI_MIN does). At a fixed resolution every budget
    grows with phi (width and depth do), so feasibility is a threshold: bisection."""
    def at(k: int) -> Candidate:
        return evaluate(replace(phi_spec(round(k * PHI_STEP, 2), fam, num_classes, head),
                                resolution=resolution), device, budgets)

    lo, hi = round(PHI_MIN / PHI_STEP), round(PHI_MAX / PHI_STEP)
    if not at(lo).fits:
        return None
    if at(hi).fits:
        return at(hi)
    while hi - lo > 1:  # invariant: at(lo) fits, at(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if at(mid).fits else (lo, mid)
    return at(lo)


def weightless_shortlist(device: Device, budgets: Budgets, num_classes: int,
                         count: int = TUNE_WEIGHTLESS_COUNT) -> list[Candidate]:
    """What ``edgeeff tune`` ranks where no pretrained model fits (a microcontroller): fit's
    pick first, then, for its resolution with the other head width and for the resolutions
    :data:`TUNE_RESOLUTION_STEPS` away with fit's head, the largest phi whose network still
    meets every budget :func:`fit` enforces (RAM with the runtime's reserve and TFLite Micro's
    arena, flash with its margin, MACs, latency); at most ``count``, no spec twice. Width and
    depth trade against resolution and head width inside the same budgets: which trade pays
    on the user's photos is what tune's ranking measures. NothingFits as :func:`fit` raises it."""
    pick = fit(device, budgets, None, num_classes).chosen
    s0 = pick.spec
    head0 = "scaled" if s0.scaled_head else "fixed"
    other = "fixed" if head0 == "scaled" else "scaled"
    tries = [(s0.resolution, other)]
    tries += [(s0.resolution + d, head0) for d in TUNE_RESOLUTION_STEPS]
    tries += [(s0.resolution + d, other) for d in TUNE_RESOLUTION_STEPS]
    out, names = [pick], {s0.name}
    for r, head in tries:
        if len(out) >= count:
            break
        if r < 32:  # ModelSpec's smallest input
            continue
        c = _largest_at(device, budgets, s0.family, num_classes, r, head)
        if c is not None and c.spec.name not in names:
            out.append(c)
            names.add(c.spec.name)
    return out

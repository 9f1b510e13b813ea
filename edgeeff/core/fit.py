"""Pick the largest compound-scaling coefficient phi whose real (rounded) model fits a device.

Every budget (MACs, activation RAM, weight flash, estimated latency) grows monotonically with
phi, because width, depth and resolution and their rounding rules all do. Feasibility is
therefore a threshold in phi and a bisection over a 0.01 grid finds it in about a dozen cost
evaluations: milliseconds, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgeeff.core import specfile
from edgeeff.core.accuracy import Prediction, predict
from edgeeff.core.arch import ModelSpec, phi_spec, preset_spec
from edgeeff.core.artifacts import SPEC_FILE
from edgeeff.core.cost import Cost, cost
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.targets import Device
from edgeeff.core.units import format_size
from edgeeff.core.zoo import AVAILABLE, source_for

PHI_STEP = 0.01
PHI_MIN = -10.0  # ~56 px input, every stage a single block
PHI_MAX = 8.0  # beyond B7


@dataclass(frozen=True)
class Budgets:
    max_macs: float | None = None
    max_ram_bytes: int | None = None
    max_flash_bytes: int | None = None
    max_latency_ms: float | None = None

    @classmethod
    def for_device(cls, device: Device, max_mflops=None, max_ram=None, max_flash=None,
                   max_latency_ms=None) -> Budgets:
        """The device's budgets with any command-line override applied."""
        mflops = max_mflops if max_mflops is not None else device.max_mflops
        for name, v in (("--max-mflops", mflops), ("--max-latency-ms", max_latency_ms)):
            if v is not None and v <= 0:
                raise EdgeeffError(f"{name} must be positive, got {v:g}")
        for name, v in (("--max-ram", max_ram), ("--max-flash", max_flash)):
            if v is not None and v <= 0:
                raise EdgeeffError(f"{name} must be positive")
        return cls(
            max_macs=None if mflops is None else mflops * 1e6,
            max_ram_bytes=max_ram if max_ram is not None else device.ram_bytes,
            max_flash_bytes=max_flash if max_flash is not None else device.flash_bytes,
            max_latency_ms=max_latency_ms if max_latency_ms is not None else device.max_latency_ms,
        )

    def to_dict(self) -> dict:
        return {
            "max_mflops": None if self.max_macs is None else self.max_macs / 1e6,
            "max_ram_bytes": self.max_ram_bytes,
            "max_flash_bytes": self.max_flash_bytes,
            "max_latency_ms": self.max_latency_ms,
        }


@dataclass(frozen=True)
class Candidate:
    spec: ModelSpec
    cost: Cost
    latency_ms: float
    violations: tuple[str, ...]  # budgets this candidate exceeds
    ram_bytes: int = 0  # the RAM figure checked (TFLM arena on MCUs, activations elsewhere)
    weights: str | None = None  # the pretrained backbone this candidate can load, if any
    accuracy: Prediction | None = None  # predicted top-1 (int8), for weight-bearing ones
    latency_predicted_ms: float | None = None  # the device profile's prediction
    latency_source: str = "model"  # "measured" (fit --measure) or "model" (the profile)

    @property
    def fits(self) -> bool:
        return not self.violations

    @property
    def top1(self) -> float | None:
        return None if self.accuracy is None else self.accuracy.top1

    @property
    def label(self) -> str:
        s = self.spec
        if self.weights and self.weights.startswith("trained"):
            return f"{self.weights} @ {s.resolution}"
        return f"phi {s.phi:+.2f}" if s.phi is not None else f"{s.preset} @ {s.resolution}"

    def row(self) -> dict:
        s, c = self.spec, self.cost
        return {
            "name": s.name, "phi": s.phi, "family": s.family, "pretrained": self.weights,
            "depth": round(s.depth, 4), "width": round(s.width, 4), "resolution": s.resolution,
            "num_classes": s.num_classes, "mflops": round(c.mflops, 1), "params": c.params,
            "flash_bytes": c.flash_bytes, "peak_ram_bytes": c.peak_ram_bytes,
            "tflm_arena_bytes": c.tflm_arena_bytes, "ram_bytes": self.ram_bytes,
            "latency_ms": round(self.latency_ms, 2), "latency_source": self.latency_source,
            "latency_predicted_ms": (None if self.latency_predicted_ms is None
                                     else round(self.latency_predicted_ms, 2)),
            "violations": list(self.violations),
            "top1_predicted": None if self.top1 is None else round(self.top1, 1),
            "top1_basis": None if self.accuracy is None else self.accuracy.basis,
        }


def ram_bytes(c: Cost, device: Device) -> int:
    """The RAM figure a device's budget is checked against.

    Microcontrollers run TensorFlow Lite Micro, whose arena also holds its tensor and node
    structs and per-channel kernel data; elsewhere the TFLite arena is the activations.
    """
    return c.tflm_arena_bytes if device.kind == "mcu" else c.peak_ram_bytes


Measure = Callable[[ModelSpec], float]  # spec -> measured latency, ms (fit --measure)


def evaluate(spec: ModelSpec, device: Device, budgets: Budgets,
             measure: Measure | None = None) -> Candidate:
    """Costs and budget verdicts of one spec. Latency is the device profile's prediction
    (its per-op model, else MACs over int8 throughput), or, with ``measure``, the spec timed
    on this machine (hardware in the loop; the prediction is kept next to it)."""
    c = cost(spec)
    predicted = device.latency_ms(spec)
    lat = predicted if measure is None else float(measure(spec))
    v = []
    if budgets.max_macs is not None and c.macs > budgets.max_macs:
        v.append("mflops")
    if budgets.max_ram_bytes is not None and ram_bytes(c, device) > budgets.max_ram_bytes:
        v.append("ram")
    if budgets.max_flash_bytes is not None and c.flash_bytes > budgets.max_flash_bytes:
        v.append("flash")
    if budgets.max_latency_ms is not None and lat > budgets.max_latency_ms:
        v.append("latency")
    weights = source_for(spec)
    acc = predict(weights, spec.resolution) if weights else None
    return Candidate(spec, c, lat, tuple(v), ram_bytes(c, device), weights, acc, predicted,
                     "model" if measure is None else "measured")


@dataclass(frozen=True)
class FitResult:
    chosen: Candidate
    binding: str  # the budget that stops phi from growing ("none" at PHI_MAX)
    neighbours: list[Candidate]  # sorted by phi, chosen included
    device: Device
    budgets: Budgets
    note: str = ""  # e.g. why another family than the device's preferred one was chosen
    runner_up: Candidate | None = None  # accuracy-ranked picks: the second best that fits
    alternative: Candidate | None = None  # weightless pick: the best pretrained one that fits
    # everything evaluated for an accuracy pick, or for a weightless pick's alternative
    candidates: tuple[Candidate, ...] = ()

    @property
    def weightless(self) -> bool:
        return self.chosen.weights is None

    def unused(self, c: Candidate | None = None) -> dict:
        """Budget the pick (or ``c``) leaves unused: MACs and latency headroom."""
        c = c or self.chosen
        b = self.budgets
        return {
            "mflops": None if b.max_macs is None else round((b.max_macs - c.cost.macs) / 1e6, 1),
            "latency_ms": (None if b.max_latency_ms is None
                           else round(b.max_latency_ms - c.latency_ms, 2)),
        }

    def summary(self, spec_file: str = SPEC_FILE) -> dict:
        """What ``fit --json`` prints and the spec file records about the choice."""
        ch = self.chosen
        s = specfile.summary(ch.spec, ch.cost, self.device.key, self.binding)
        s.update(latency_ms=round(ch.latency_ms, 2), latency_source=ch.latency_source,
                 latency_predicted_ms=round(ch.latency_predicted_ms, 2),
                 latency_basis=self.device.latency_basis, ram_bytes=ch.ram_bytes,
                 ram_model="tflm_arena" if self.device.kind == "mcu" else "activations",
                 budgets=self.budgets.to_dict(), weights=ch.weights,
                 top1_predicted=None if ch.top1 is None else round(ch.top1, 1),
                 top1_basis=None if ch.accuracy is None else ch.accuracy.basis,
                 unused=self.unused())
        if self.runner_up is not None:
            s["runner_up"] = self.runner_up.row()
        if self.weightless:
            s["weights_hint"] = weightless_hint(self, str(spec_file))
            s["pretrained_alternative"] = (None if self.alternative is None
                                           else self.alternative.row())
        if self.note:
            s["note"] = self.note
        return s

    def write_spec(self, path) -> None:
        """The spec file ``export`` and ``train`` take, with this choice recorded."""
        specfile.write(path, self.chosen.spec,
                       {"fit": {**self.summary(path), "device_profile": self.device.to_dict()}})


class NothingFits(EdgeeffError):
    """Even the smallest candidate exceeds a budget. Carries the data, not just the message:
    ``family``, ``smallest`` (the :class:`Candidate` tried) and ``limits`` (one readable
    shortfall per violated budget, keyed by budget name)."""

    def __init__(self, device: Device, family: str, smallest: Candidate, limits: dict[str, str],
                 what: str, hint: str = ""):
        self.device, self.family, self.smallest, self.limits = device, family, smallest, limits
        self.shortfall = "; ".join(limits.values())
        super().__init__(f"nothing fits {device.name}: even {what} exceeds {self.shortfall}{hint}")

    @property
    def violations(self) -> tuple[str, ...]:
        return tuple(self.limits)


def _describe_limit(budget: str, cand: Candidate, budgets: Budgets) -> str:
    c = cand.cost
    if budget == "mflops":
        return f"mflops: needs {c.mflops:.1f} M > {budgets.max_macs / 1e6:g} M"
    if budget == "ram":
        return (f"ram: needs {format_size(cand.ram_bytes)} > "
                f"{format_size(budgets.max_ram_bytes)} (short by "
                f"{(cand.ram_bytes - budgets.max_ram_bytes) / 1024:.0f} KB)")
    if budget == "flash":
        return (f"flash: needs {format_size(c.flash_bytes)} > "
                f"{format_size(budgets.max_flash_bytes)} (short by "
                f"{(c.flash_bytes - budgets.max_flash_bytes) / 1024:.0f} KB)")
    return f"latency: needs {cand.latency_ms:.1f} ms > {budgets.max_latency_ms:g} ms"


def _limits(cand: Candidate, budgets: Budgets) -> dict[str, str]:
    return {b: _describe_limit(b, cand, budgets) for b in cand.violations}


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


def weightless_hint(res: FitResult, spec_file: str = SPEC_FILE) -> str:
    """One line for a pick without ImageNet weights: how to get weights, and what to pick
    instead if pretrained accuracy matters more than the largest phi."""
    ch = res.chosen
    line = (f"{ch.label} has no ImageNet weights: train it on your data with "
            f"'edgeeff train --data DIR --spec {spec_file}'")
    alt = res.alternative
    if alt is not None:
        line += (f"; the best pretrained model within the same budgets is {alt.spec.preset} @ "
                 f"{alt.spec.resolution} px, predicted top-1 {alt.top1:.1f} % int8 "
                 f"('edgeeff fit --pretrained')")
    return line


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
        raise NothingFits(device, fam, smallest, _limits(smallest, budgets),
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
    spec, doc = specfile.read(path)
    t = doc.get("trained")
    if not isinstance(t, dict) or not isinstance(t.get("top1", t.get("val_accuracy")),
                                                 (int, float)):
        raise EdgeeffError(f"{path}: not a spec file written by 'edgeeff train' "
                           "(no measured accuracy)")
    top1 = float(t["top1"]) if "top1" in t else 100.0 * float(t["val_accuracy"])
    basis = str(t.get("top1_basis") or "measured by edgeeff train on its validation images")
    c = evaluate(spec, device, budgets, measure)
    name = Path(path).resolve().parent.name
    return replace(c, weights=f"trained:{name}", accuracy=Prediction(top1, top1, basis))


def fit_pretrained(device: Device, budgets: Budgets, num_classes: int = 1000,
                   family: str | None = None, trained: tuple[str, ...] = (),
                   pretrained: bool = True, measure: Measure | None = None) -> FitResult:
    """The pretrained candidate with the highest predicted top-1 that meets every budget.

    More MACs spent on a backbone far below its native resolution buy less accuracy than
    fewer MACs near it (Lite2 at 160 px loses to Lite0 at 192 px), so candidates are ranked
    by predicted int8 ImageNet top-1 (:mod:`edgeeff.core.accuracy`), not by MACs. The result
    names the runner-up, and the binding budget is what stops the next more accurate one.
    """
    if pretrained and family not in (None, "lite"):
        raise EdgeeffError("--pretrained weights exist only for the lite family")
    cands = pretrained_candidates(device, budgets, num_classes, measure) if pretrained else []
    cands += [trained_candidate(p, device, budgets, measure) for p in trained]
    if not cands:
        raise EdgeeffError("no weight-bearing candidates: give --pretrained or --trained SPEC")
    ranked = sorted(cands, key=lambda c: (-c.top1, c.cost.macs))
    fitting = [c for c in ranked if c.fits]
    if not fitting:
        smallest = min(cands, key=lambda c: c.cost.macs)
        raise NothingFits(device, "lite", smallest, _limits(smallest, budgets),
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
        own = [c for c in cands if c.weights == name]
        fit_own = [c for c in own if c.fits]
        top = max(fit_own, key=lambda c: c.top1) if fit_own else None
        nxt_up = next((c for c in own if not c.fits and (top is None or c.spec.resolution >
                                                             top.spec.resolution)), None)
        for c in (top, nxt_up):
            if c is not None and id(c) not in shown:
                rows.append(c)
                shown.add(id(c))
    rows += [c for c in cands if c.weights not in AVAILABLE and id(c) not in shown]
    rows.sort(key=lambda c: c.cost.macs)
    return FitResult(best, binding, rows, device, budgets, runner_up=runner,
                     candidates=tuple(cands))

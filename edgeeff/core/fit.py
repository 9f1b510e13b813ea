"""Pick the largest compound-scaling coefficient phi whose real (rounded) model fits a device.

Every budget (MACs, activation RAM, weight flash, estimated latency) grows monotonically with
phi, because width, depth and resolution and their rounding rules all do. Feasibility is
therefore a threshold in phi and a bisection over a 0.01 grid finds it in about a dozen cost
evaluations: milliseconds, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeeff.core import specfile
from edgeeff.core.arch import ModelSpec, phi_spec, preset_spec
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

    @property
    def fits(self) -> bool:
        return not self.violations

    @property
    def weights(self) -> str | None:
        """The pretrained backbone this candidate can load, if any."""
        return source_for(self.spec)

    def row(self) -> dict:
        s, c = self.spec, self.cost
        return {
            "name": s.name, "phi": s.phi, "family": s.family, "pretrained": self.weights, "depth": round(s.depth, 4),
            "width": round(s.width, 4), "resolution": s.resolution,
            "num_classes": s.num_classes, "mflops": round(c.mflops, 1), "params": c.params,
            "flash_bytes": c.flash_bytes, "peak_ram_bytes": c.peak_ram_bytes,
            "tflm_arena_bytes": c.tflm_arena_bytes, "ram_bytes": self.ram_bytes,
            "latency_ms": round(self.latency_ms, 2), "violations": list(self.violations),
        }


def ram_bytes(c: Cost, device: Device) -> int:
    """The RAM figure a device's budget is checked against.

    Microcontrollers run TensorFlow Lite Micro, whose arena also holds its tensor and node
    structs and per-channel kernel data; elsewhere the TFLite arena is the activations.
    """
    return c.tflm_arena_bytes if device.kind == "mcu" else c.peak_ram_bytes


def evaluate(spec: ModelSpec, device: Device, budgets: Budgets) -> Candidate:
    c = cost(spec)
    lat = device.latency_ms(c.macs)
    v = []
    if budgets.max_macs is not None and c.macs > budgets.max_macs:
        v.append("mflops")
    if budgets.max_ram_bytes is not None and ram_bytes(c, device) > budgets.max_ram_bytes:
        v.append("ram")
    if budgets.max_flash_bytes is not None and c.flash_bytes > budgets.max_flash_bytes:
        v.append("flash")
    if budgets.max_latency_ms is not None and lat > budgets.max_latency_ms:
        v.append("latency")
    return Candidate(spec, c, lat, tuple(v), ram_bytes(c, device))


@dataclass(frozen=True)
class FitResult:
    chosen: Candidate
    binding: str  # the budget that stops phi from growing ("none" at PHI_MAX)
    neighbours: list[Candidate]  # sorted by phi, chosen included
    device: Device
    budgets: Budgets
    note: str = ""  # e.g. why another family than the device's preferred one was chosen

    def summary(self) -> dict:
        """What ``fit --json`` prints and the spec file records about the choice."""
        ch = self.chosen
        s = specfile.summary(ch.spec, ch.cost, self.device.key, self.binding)
        s.update(latency_ms=round(ch.latency_ms, 2), ram_bytes=ch.ram_bytes,
                 ram_model="tflm_arena" if self.device.kind == "mcu" else "activations",
                 budgets=self.budgets.to_dict())
        if self.note:
            s["note"] = self.note
        return s

    def write_spec(self, path) -> None:
        """The spec file ``export`` and ``train`` take, with this choice recorded."""
        specfile.write(path, self.chosen.spec,
                       {"fit": {**self.summary(), "device_profile": self.device.to_dict()}})


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
        num_classes: int = 1000) -> FitResult:
    """The largest phi on the 0.01 grid whose model meets every budget.

    Without ``family`` the device's preferred family is searched first; when nothing of it
    fits, the other family is tried (the lite family keeps its 1280-wide head at every phi,
    the efficientnet family scales it down, which is what lets a 1000-class model into 1 MB of
    flash), and the result says so.
    """
    if family is not None:
        return _fit_family(device, budgets, family, num_classes)
    try:
        return _fit_family(device, budgets, device.family, num_classes)
    except NothingFits as first:
        other = next(f for f in ("lite", "efficientnet") if f != device.family)
        try:
            res = _fit_family(device, budgets, other, num_classes)
        except NothingFits:
            raise first from None
        note = (f"no {device.family} model fits ({first.shortfall}); "
                f"chose the {other} family instead")
        return FitResult(res.chosen, res.binding, res.neighbours, device, budgets, note)


def _fit_family(device: Device, budgets: Budgets, fam: str, num_classes: int) -> FitResult:
    if num_classes < 1:
        raise EdgeeffError(f"--num-classes must be >= 1, got {num_classes}")
    cache: dict[int, Candidate] = {}

    def at(k: int) -> Candidate:
        if k not in cache:
            cache[k] = evaluate(phi_spec(round(k * PHI_STEP, 2), fam, num_classes), device, budgets)
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
        best, binding = hi, "none"
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


def fit_pretrained(device: Device, budgets: Budgets, num_classes: int = 1000,
                   family: str | None = None) -> FitResult:
    """Only architectures with ImageNet weights (lite0/1/2), scaled by resolution alone.

    Convolution weights do not depend on the input size, so each pretrained backbone is tried at
    every multiple of 8 from 96 px up to its native resolution. Among the candidates that fit,
    the one with the most multiply-adds wins (more compute on a pretrained backbone is, to first
    order, more accuracy); its binding budget is the one the next size up violates.
    """
    if family not in (None, "lite"):
        raise EdgeeffError("--pretrained weights exist only for the lite family")
    best: Candidate | None = None
    best_next: Candidate | None = None
    rows: list[Candidate] = []
    for name in AVAILABLE:
        native = preset_spec(name).resolution
        sizes = list(range(PRETRAINED_MIN_RESOLUTION, native + 1, 8))
        cands = [evaluate(preset_spec(name, num_classes, r), device, budgets) for r in sizes]
        fitting = [i for i, c in enumerate(cands) if c.fits]
        if not fitting:
            rows.append(cands[0])
            continue
        i = fitting[-1]
        rows.extend(cands[max(0, i - 2):i + 2])
        if best is None or cands[i].cost.macs > best.cost.macs:
            best, best_next = cands[i], cands[i + 1] if i + 1 < len(cands) else None
    if best is None:
        smallest = rows[0]
        raise NothingFits(device, "lite", smallest, _limits(smallest, budgets),
                          f"pretrained lite0 at {PRETRAINED_MIN_RESOLUTION}px")
    binding = "+".join(best_next.violations) if best_next else "none (native resolution)"
    return FitResult(best, binding, rows, device, budgets)

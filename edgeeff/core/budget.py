"""What a pick is checked against and what it records: budgets, one candidate's costs and
verdicts, the result of a pick, and the error when nothing fits.

Shared by the phi search (:mod:`edgeeff.core.fit`) and the accuracy ranking of weight-bearing
models (:mod:`edgeeff.core.rank`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeeff.core import specfile
from edgeeff.core.accuracy import Prediction, predict
from edgeeff.core.arch import ModelSpec
from edgeeff.core.artifacts import SPEC_FILE
from edgeeff.core.cost import Cost, cost
from edgeeff.core.errors import FieldError
from edgeeff.core.targets import Device, positive_number
from edgeeff.core.units import format_size
from edgeeff.core.zoo import WeightSource, imagenet_source


@dataclass(frozen=True)
class Budgets:
    max_macs: float | None = None
    max_ram_bytes: int | None = None
    max_flash_bytes: int | None = None
    max_latency_ms: float | None = None
    # taken out of the flash and RAM budgets above: what the runtime itself needs (the
    # device profile's runtime_flash / runtime_ram), so the model gets only the rest
    runtime_flash_bytes: int = 0
    runtime_ram_bytes: int = 0

    @classmethod
    def for_device(cls, device: Device, max_mflops=None, max_ram=None, max_flash=None,
                   max_latency_ms=None) -> Budgets:
        """The device's budgets with any override applied, less the runtime's reserve where
        the profile has one (an override is the whole chip's figure too). A bad override is a
        :class:`~edgeeff.core.errors.FieldError` naming its parameter."""
        mflops = max_mflops if max_mflops is not None else device.max_mflops
        for name, v in (("max_mflops", mflops), ("max_latency_ms", max_latency_ms)):
            if v is not None and not positive_number(v):
                raise FieldError(f"{{{name}}} must be a positive finite number, got {v:g}", name)
        for name, v in (("max_ram", max_ram), ("max_flash", max_flash)):
            if v is not None and v <= 0:
                raise FieldError(f"{{{name}}} must be positive", name)
        ram = max_ram if max_ram is not None else device.ram_bytes
        flash = max_flash if max_flash is not None else device.flash_bytes
        for name, total, reserve in (("max_ram", ram, device.runtime_ram_bytes),
                                     ("max_flash", flash, device.runtime_flash_bytes)):
            if reserve and total <= reserve:
                raise FieldError(f"{{{name}}} {format_size(total)} leaves nothing for the "
                                 f"model: {device.name}'s runtime takes {format_size(reserve)}",
                                 name)
        return cls(
            max_macs=None if mflops is None else mflops * 1e6,
            max_ram_bytes=ram - device.runtime_ram_bytes,
            max_flash_bytes=flash - device.runtime_flash_bytes,
            max_latency_ms=max_latency_ms if max_latency_ms is not None else device.max_latency_ms,
            runtime_flash_bytes=device.runtime_flash_bytes,
            runtime_ram_bytes=device.runtime_ram_bytes,
        )

    @property
    def basis(self) -> str:
        """How the flash and RAM budgets were derived (empty without a runtime reserve)."""
        if not (self.runtime_flash_bytes or self.runtime_ram_bytes):
            return ""
        return (f"flash and RAM budgets are the model's: the device's less the runtime's "
                f"{format_size(self.runtime_flash_bytes)} flash and "
                f"{format_size(self.runtime_ram_bytes)} RAM (the profile's runtime_flash, "
                f"runtime_ram)")

    def to_dict(self) -> dict:
        return {
            "max_mflops": None if self.max_macs is None else self.max_macs / 1e6,
            "max_ram_bytes": self.max_ram_bytes,
            "max_flash_bytes": self.max_flash_bytes,
            "max_latency_ms": self.max_latency_ms,
            "runtime_flash_bytes": self.runtime_flash_bytes,
            "runtime_ram_bytes": self.runtime_ram_bytes,
        }


@dataclass(frozen=True)
class Candidate:
    spec: ModelSpec
    cost: Cost
    latency_ms: float
    violations: tuple[str, ...]  # budgets this candidate exceeds
    ram_bytes: int = 0  # the RAM figure checked (TFLM arena on MCUs, activations elsewhere)
    flash_bytes: int = 0  # the flash figure checked (:func:`flash_bytes`)
    weights: WeightSource | None = None  # the weights this candidate can load, if any
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
        if self.weights is not None and self.weights.is_trained:
            return f"{self.weights} @ {s.resolution}"
        return f"phi {s.phi:+.2f}" if s.phi is not None else f"{s.preset} @ {s.resolution}"

    def row(self) -> dict:
        s, c = self.spec, self.cost
        return {
            "name": s.name, "phi": s.phi, "family": s.family,
            "pretrained": None if self.weights is None else self.weights.to_dict(),
            "depth": round(s.depth, 4), "width": round(s.width, 4), "resolution": s.resolution,
            "num_classes": s.num_classes, "mflops": round(c.mflops, 1), "params": c.params,
            "flash_bytes": c.flash_bytes, "flash_checked_bytes": self.flash_bytes,
            "peak_ram_bytes": c.peak_ram_bytes,
            "tflm_arena_bytes": c.tflm_arena_bytes,
            "tflm_reserved_bytes": c.tflm_reserved_bytes,
            "head": "scaled" if s.scaled_head else "fixed", "ram_bytes": self.ram_bytes,
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
    structs and per-channel kernel data: the figure is the arena the firmware reserves
    (``kTensorArenaSize``, the minimum plus its margin); elsewhere the TFLite arena is the
    activations.
    """
    return c.tflm_reserved_bytes if device.kind == "mcu" else c.peak_ram_bytes


# On a microcontroller the flash figure is what `edgeeff firmware` links beside TFLite Micro:
# the model file (the analytic estimate plus this margin: on the 15 bundled MCU picks the
# exported file came out up to 1.6 % above it, benchmarks/mcu_firmware.py) and the test image
# the firmware embeds to check its output against the .tflite's (resolution^2 x 3 bytes).
MCU_FLASH_MARGIN_PCT = 3


def flash_bytes(c: Cost, spec: ModelSpec, device: Device) -> int:
    """The flash figure a device's budget is checked against: the int8 model; on a
    microcontroller also its margin and the embedded test image (see MCU_FLASH_MARGIN_PCT),
    so that what ``fit`` passes links (``edgeeff firmware --device``)."""
    if device.kind != "mcu":
        return c.flash_bytes
    return (-(-c.flash_bytes * (100 + MCU_FLASH_MARGIN_PCT) // 100)
            + spec.resolution * spec.resolution * 3)


# spec -> measured latency, ms (fit --measure); None: not timed (the prediction stands)
Measure = Callable[[ModelSpec], "float | None"]


@dataclass(frozen=True)
class MeasureSummary:
    """What ``fit --measure`` spent and how steady its timings were: one line of output."""

    timed: int  # graphs timed (a network timed once counts once)
    seconds: float  # time spent timing them
    budget_s: float  # the time budget (--time-budget)
    bound: int  # the most the phi search may time (its bisection bound); 0: no such bound
    # (an accuracy ranking times every candidate within the static budgets, time permitting)
    spread_p10: float  # p90/p10 - 1 of the candidates' frames: the 10th percentile over them
    spread_p90: float  # ... and the 90th
    pick_p10_ms: float | None = None  # the pick's frames, p10 and p90
    pick_p90_ms: float | None = None
    stopped: str = ""  # why the search stopped early (the time budget), else ""
    warning: str = ""  # the last two candidates cannot be told apart, else ""

    def line(self) -> str:
        bound = f" (at most {self.bound})" if self.bound else ""
        s = (f"timed {self.timed} candidate{'s' if self.timed != 1 else ''}{bound} "
             f"in {self.seconds:.1f} s of a {self.budget_s:g} s budget; "
             f"spread of their frames (p90/p10) {self.spread_p10:.0%}..{self.spread_p90:.0%}")
        if self.pick_p10_ms is not None:
            s += f"; the pick {self.pick_p10_ms:.3g}..{self.pick_p90_ms:.3g} ms (p10..p90)"
        return s + (f"; {self.stopped}" if self.stopped else "")

    def to_dict(self) -> dict:
        return {"timed": self.timed, "seconds": round(self.seconds, 2), "budget_s": self.budget_s,
                "bound": self.bound, "spread_p10": round(self.spread_p10, 4),
                "spread_p90": round(self.spread_p90, 4), "pick_p10_ms": self.pick_p10_ms,
                "pick_p90_ms": self.pick_p90_ms, "stopped": self.stopped or None,
                "warning": self.warning or None}


class BudgetedMeasure:
    """``fit --measure``'s timer held to a time budget: the search asks it for a candidate's
    :class:`~edgeeff.core.latency.Timing`; once the budget is spent it answers ``None`` (the
    candidate keeps the profile's prediction) and says so in its summary.

    ``timer`` is any object with ``timing(spec, budget_s) -> Timing`` (timing it, at most
    about ``budget_s`` seconds) and ``cached(spec) -> Timing | None``: the device tier's
    :class:`edgeeff.device.profile.SpecTimer`. ``progress(k, spec, timing)`` is told of each
    timing; ``clock`` is the monotonic clock the budget is kept with."""

    def __init__(self, timer, budget_s: float, progress=None, clock=None):
        self.timer, self.budget_s = timer, float(budget_s)
        self.progress = progress
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.timings: list = []  # (spec, Timing) in the order taken
        self.stopped = ""
        self.bound = 0  # set by the search
        self.warning = ""

    def spent(self) -> float:
        return self.clock() - self.start

    def cached(self, spec: ModelSpec):
        return self.timer.cached(spec)

    def timing(self, spec: ModelSpec, share: float = 3.0, force: bool = False):
        """The candidate's timing (cached, or taken now with at most ``1/share`` of the time
        left), or None when the budget is spent (``force``: timed anyway, with the fewest
        frames)."""
        t = self.timer.cached(spec)
        if t is not None:
            return t
        left = self.budget_s - self.spent()
        if left <= 0 and force:
            left = 1e-9
        elif left <= 0:
            if not self.stopped:
                self.stopped = (f"stopped by the {self.budget_s:g} s time budget "
                                "(--time-budget): the pick is the largest candidate measured "
                                "to fit")
            return None
        t = self.timer.timing(spec, budget_s=left / share)
        self.timings.append((spec, t))
        if self.progress:
            self.progress(len(self.timings), spec, t)
        return t

    def __call__(self, spec: ModelSpec) -> float | None:
        t = self.timing(spec)
        return None if t is None else t.p50_ms

    def summary(self, pick: ModelSpec | None = None) -> MeasureSummary:
        spreads = [t.spread for _, t in self.timings] or [0.0]
        pt = self.timer.cached(pick) if pick is not None else None
        return MeasureSummary(
            len(self.timings), sum(t.seconds for _, t in self.timings), self.budget_s,
            self.bound, float(np.percentile(spreads, 10)), float(np.percentile(spreads, 90)),
            None if pt is None else round(pt.p10_ms, 3),
            None if pt is None else round(pt.p90_ms, 3), self.stopped, self.warning)


def evaluate(spec: ModelSpec, device: Device, budgets: Budgets,
             measure: Measure | None = None) -> Candidate:
    """Costs and budget verdicts of one spec. Latency is the device profile's prediction
    (its per-op model, else MACs over int8 throughput), or, with ``measure``, the spec timed
    on this machine (hardware in the loop; the prediction is kept next to it)."""
    c = cost(spec)
    predicted = device.latency_ms(spec)
    v = []
    if budgets.max_macs is not None and c.macs > budgets.max_macs:
        v.append("mflops")
    if budgets.max_ram_bytes is not None and ram_bytes(c, device) > budgets.max_ram_bytes:
        v.append("ram")
    flash = flash_bytes(c, spec, device)
    if budgets.max_flash_bytes is not None and flash > budgets.max_flash_bytes:
        v.append("flash")
    # a spec the static budgets already exclude is not timed: fit --measure times only
    # candidates that could be chosen (its latency then stays the profile's prediction)
    m = measure(spec) if measure is not None and not v else None
    timed = m is not None
    lat = float(m) if timed else predicted
    if budgets.max_latency_ms is not None and lat > budgets.max_latency_ms:
        v.append("latency")
    weights = imagenet_source(spec)
    acc = predict(weights.name, spec.resolution) if weights else None
    return Candidate(spec, c, lat, tuple(v), ram_bytes(c, device), flash, weights, acc,
                     predicted, "measured" if timed else "model")


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
    assumed: str = ""  # one line: the class count fit assumed (none given, no pretrained fits)

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
                 budgets=self.budgets.to_dict(),
                 weights=None if ch.weights is None else ch.weights.to_dict(),
                 runtime_flash_bytes=self.budgets.runtime_flash_bytes,
                 runtime_ram_bytes=self.budgets.runtime_ram_bytes,
                 budget_basis=self.budgets.basis or "the device's flash and RAM",
                 top1_predicted=None if ch.top1 is None else round(ch.top1, 1),
                 top1_basis=None if ch.accuracy is None else ch.accuracy.basis,
                 unused=self.unused())
        if self.runner_up is not None:
            s["runner_up"] = self.runner_up.row()
        if self.weightless:
            s["weights_hint"] = self.weights_hint(str(spec_file))
            s["pretrained_alternative"] = (None if self.alternative is None
                                           else self.alternative.row())
        if self.note:
            s["note"] = self.note
        if self.assumed:
            s["classes_assumed"] = self.assumed
        return s

    def weights_hint(self, spec_file: str = SPEC_FILE) -> str:
        """One line for a pick without ImageNet weights: how to get weights, and what to pick
        instead if pretrained accuracy matters more than the largest phi."""
        ch = self.chosen
        line = (f"{ch.label} has no ImageNet weights: train it on your data with "
                f"'edgeeff train --data DIR --spec {spec_file}'")
        alt = self.alternative
        if alt is not None:
            line += (f"; the best pretrained model within the same budgets is {alt.spec.preset} @ "
                     f"{alt.spec.resolution} px, predicted top-1 {alt.top1:.1f} % int8 "
                     f"('edgeeff fit --pretrained')")
        return line

    def spec_file(self, path=SPEC_FILE) -> specfile.SpecFile:
        """The spec file ``export`` and ``train`` take, with this choice recorded (``path``:
        where it will be written, named in the weights hint); the caller writes it with
        :func:`edgeeff.core.specfile.write`."""
        fitted = specfile.Fitted.from_summary(self.summary(path), self.device.to_dict())
        return specfile.SpecFile(self.chosen.spec, fit=fitted)


@dataclass(frozen=True)
class Shortfall:
    """How far one candidate is over one budget: ``needed`` and ``limit`` in the budget's
    unit (MFLOPs for ``mflops``, bytes for ``ram`` and ``flash``, ms for ``latency``)."""

    budget: str
    needed: float
    limit: float

    def __str__(self) -> str:
        if self.budget == "mflops":
            return f"mflops: needs {self.needed:.1f} M > {self.limit:g} M"
        if self.budget in ("ram", "flash"):
            return (f"{self.budget}: needs {format_size(int(self.needed))} > "
                    f"{format_size(int(self.limit))} (short by "
                    f"{(self.needed - self.limit) / 1024:.0f} KB)")
        return f"latency: needs {self.needed:.1f} ms > {self.limit:g} ms"


def shortfalls(cand: Candidate, budgets: Budgets) -> dict[str, Shortfall]:
    """One :class:`Shortfall` per budget ``cand`` violates, keyed by budget name."""
    c = cand.cost
    figures = {"mflops": (c.mflops, (budgets.max_macs or 0) / 1e6),
               "ram": (cand.ram_bytes, budgets.max_ram_bytes),
               "flash": (cand.flash_bytes, budgets.max_flash_bytes),
               "latency": (cand.latency_ms, budgets.max_latency_ms)}
    return {b: Shortfall(b, *figures[b]) for b in cand.violations}


class NothingFits(FieldError):
    """Even the smallest candidate exceeds a budget. Carries the data, not just the message:
    ``device``, ``family``, ``smallest`` (the :class:`Candidate` tried) and ``limits`` (a
    :class:`Shortfall` per violated budget, keyed by budget name). ``hint`` may name
    parameters as ``{name}`` (listed in ``fields``), which the CLI shows as its flags."""

    def __init__(self, device: Device, family: str, smallest: Candidate,
                 limits: dict[str, Shortfall], what: str, hint: str = "",
                 fields: tuple[str, ...] = ()):
        self.device, self.family, self.smallest, self.limits = device, family, smallest, limits
        self.shortfall = "; ".join(str(x) for x in limits.values())
        super().__init__(f"nothing fits {device.name}: even {what} exceeds {self.shortfall}{hint}",
                         *fields)

    @property
    def violations(self) -> tuple[str, ...]:
        return tuple(self.limits)

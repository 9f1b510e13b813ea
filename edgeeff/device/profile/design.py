"""Which graphs ``edgeeff profile`` times: specs whose family, width, depth, resolution and
number of classes vary independently (a 5-D Halton sequence, so that the per-op-type features
are not collinear as they are along compound scaling), each timed whole and cut after the
stages nearest a third and two thirds of its MACs (prefix graphs), which separates the early
high-resolution ops from the late many-channel ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeeff.core.arch import ModelSpec, phi_spec
from edgeeff.core.cost import cost
from edgeeff.core.graph import Graph, graph


def _halton(i: int, base: int) -> float:
    f, r = 1.0, 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


@dataclass(frozen=True)
class Probe:
    """One graph to time: ``spec``'s int8 graph, whole or cut after ``n_ops`` ops."""

    spec: ModelSpec
    n_ops: int | None = None
    group: int = 0  # probes of one spec share a group (kept together in cross-validation)

    def graph(self) -> Graph:
        g = graph(self.spec)
        return g if self.n_ops is None else g.prefix(self.n_ops)

    @property
    def label(self) -> str:
        s = self.spec
        cut = "" if self.n_ops is None else f" [:{self.n_ops}]"
        return (f"{s.family[:4]} w{s.width:.2f} d{s.depth:.2f} r{s.resolution} "
                f"c{s.num_classes}{cut}")


MIN_MACS, MAX_MACS = 10e6, 2.5e9  # the design's range (a little wider than it is used for)
QUICK_MAX_MACS = 0.6e9  # --quick: smaller graphs only
SPECS = {"quick": 20, "full": 44}  # specs in the design (each timed whole and cut twice)
CLASSES = (10, 100, 1000)

# the small graph timed after every probe to correct for drift in the machine's speed
REFERENCE = ModelSpec(family="lite", width=1.0, depth=1.0, resolution=128, num_classes=10)


def sample_spec(u: tuple[float, float, float, float, float]) -> ModelSpec:
    """A spec from five numbers in [0, 1): family, width, depth, resolution, classes."""
    family = "lite" if u[0] < 0.5 else "efficientnet"
    width = 0.25 * 8.0 ** u[1]  # 0.25 .. 2.0, log-uniform
    depth = 0.25 * 12.0 ** u[2]  # 0.25 .. 3.0
    res = int(round((64 + u[3] * (384 - 64)) / 8)) * 8
    classes = CLASSES[min(int(u[4] * len(CLASSES)), len(CLASSES) - 1)]
    return ModelSpec(family=family, width=round(width, 4), depth=round(depth, 4),
                     resolution=res, num_classes=classes)


def design_specs(n: int, offset: int = 1, lo: float = MIN_MACS, hi: float = MAX_MACS
                 ) -> list[ModelSpec]:
    """``n`` specs from a Halton sequence (bases 2, 3, 5, 7, 11) whose MACs lie in [lo, hi]."""
    out, i = [], offset
    while len(out) < n:
        u = tuple(_halton(i, b) for b in (2, 3, 5, 7, 11))
        i += 1
        s = sample_spec(u)
        if lo <= cost(s).macs <= hi:
            out.append(s)
    return out


def random_specs(n: int, seed: int, lo: float = 20e6, hi: float = 2e9,
                 classes: tuple[int, ...] = (10, 1000)) -> list[ModelSpec]:
    """``n`` random specs (both families, independent width/depth/resolution or compound
    scaling, MACs in [lo, hi]): held-out tests of a latency model."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        fam = ("lite", "efficientnet")[len(out) % 2]
        c = int(rng.choice(classes))
        if rng.random() < 0.5:
            s = phi_spec(round(float(rng.uniform(-8, 4)), 2), fam, c)
        else:
            s = sample_spec((0.0 if fam == "lite" else 0.9, *rng.random(3), 0.0))
            s = ModelSpec(family=fam, width=s.width, depth=s.depth, resolution=s.resolution,
                          num_classes=c)
        if lo <= cost(s).macs <= hi:
            out.append(s)
    return out


def cut_points(spec: ModelSpec) -> list[int]:
    """Where to cut ``spec``'s graph for prefix probes: after the stage that ends nearest a
    third and two thirds of the MACs."""
    g = graph(spec)
    macs = np.cumsum([op.macs for op in g.ops])
    ends = [i + 1 for i in range(len(g.ops) - 1) if g.ops[i + 1].stage != g.ops[i].stage]
    cuts = []
    for frac in (1 / 3, 2 / 3):
        best = min(ends, key=lambda e: abs(macs[e - 1] - frac * macs[-1]))
        if best not in cuts:
            cuts.append(best)
    return cuts


def design(quick: bool = False) -> list[Probe]:
    """The graphs ``edgeeff profile`` times: :data:`SPECS` specs (``quick``: fewer, none above
    :data:`QUICK_MAX_MACS`), each whole and cut at two points."""
    mode = "quick" if quick else "full"
    specs = design_specs(SPECS[mode], hi=QUICK_MAX_MACS if quick else MAX_MACS)
    probes = []
    for gi, s in enumerate(specs):
        probes.append(Probe(s, None, gi))
        for c in cut_points(s):
            probes.append(Probe(s, c, gi))
    return probes

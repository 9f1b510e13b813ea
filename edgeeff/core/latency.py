"""Per-op latency model of the int8 graph: features from :mod:`edgeeff.core.graph`, coefficients from a
device profile (``edgeeff profile``), predictions in milliseconds. Pure numpy.

The model is nn-Meter's baseline form: the int8 TFLite graph (:func:`edgeeff.core.graph.graph`,
op by op, as the exporter writes it) is split into op types whose kernels behave alike (a 1x1
convolution is a GEMM, a squeeze-excite convolution on a 1x1 map a GEMV, a depthwise 5x5 is not
a depthwise 3x3, a broadcast MUL is not an elementwise one, ...), and each op costs

    t(op) = a[type] * MACs + b[type] * activation bytes (inputs + output)
            + c[type] * weight bytes (int8 weights + int32 biases) + d[type]

plus one constant per graph (the interpreter's invoke). The coefficients are non-negative and
fitted by non-negative least squares on whole-graph latencies (:func:`fit`) measured with the
local runtime; summing the ops of a spec's graph predicts its latency (:func:`predict_ms`).
The regression is weighted by relative error, because that is what the budget checks use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgeeff.core.arch import ModelSpec
from edgeeff.core.graph import FORMS, Graph, graph

MODEL_FORM = "per-op-linear"
MODEL_VERSION = 2  # 2: DEQUANTIZE (the CPU model's uint8 input); a version 1 profile has
# no coefficient for it and counts it as free

# (feature name, unit of its coefficient in the profile, factor from seconds per feature unit)
# out_bytes (the output's share of act_bytes again) is used by the microcontroller model only
# (edgeeff.core.mcu_latency: CMSIS-NN requantizes every output element, so a 1x1 expand costs
# more per MAC than a project); OP_TYPES below does not offer it to a CPU fit
FEATURES = ("macs", "act_bytes", "out_bytes", "weight_bytes", "fixed")
UNITS = {"macs": ("ns_per_mac", 1e9), "act_bytes": ("ns_per_act_byte", 1e9),
         "out_bytes": ("ns_per_out_byte", 1e9),
         "weight_bytes": ("ns_per_weight_byte", 1e9), "fixed": ("us_per_op", 1e6)}
GRAPH_UNIT = "us_per_graph"

# Op types, in the order they are reported. Which features each type may use: a feature that
# cannot vary independently within a type (weights of an elementwise op) is left out, which
# keeps the regression well posed.
OP_TYPES: dict[str, tuple[str, ...]] = {
    "DEQUANTIZE": ("act_bytes", "fixed"),  # uint8 input -> float32 (graph.py: the CPU form)
    "QUANTIZE": ("act_bytes", "fixed"),
    "CONV_2D_KxK": ("macs", "act_bytes", "weight_bytes", "fixed"),  # the stem's 3x3 stride 2
    "CONV_2D_1x1": ("macs", "act_bytes", "weight_bytes", "fixed"),  # expand, project, top
    "CONV_2D_SE": ("macs", "act_bytes", "fixed"),  # squeeze-excite 1x1 on a 1x1 map (GEMV)
    "DEPTHWISE_CONV_2D_3x3": ("macs", "act_bytes", "weight_bytes", "fixed"),
    "DEPTHWISE_CONV_2D_5x5": ("macs", "act_bytes", "weight_bytes", "fixed"),
    "ADD": ("act_bytes", "fixed"),  # residual
    "ADD_CONST": ("act_bytes", "fixed"),  # input normalisation (efficientnet family)
    "MUL": ("act_bytes", "fixed"),  # swish: x * sigmoid(x)
    "MUL_BCAST": ("act_bytes", "fixed"),  # squeeze-excite: x * s, s broadcast over H, W
    "MUL_CONST": ("act_bytes", "fixed"),  # input normalisation
    "LOGISTIC": ("act_bytes", "fixed"),
    "MEAN": ("act_bytes", "fixed"),  # spatial mean: squeeze-excite and the head's pooling
    "FULLY_CONNECTED": ("weight_bytes", "fixed"),
    "SOFTMAX": ("act_bytes", "fixed"),
}


def op_type(g: Graph, i: int) -> str:
    """The latency type of op ``i`` of ``g``."""
    op = g.ops[i]
    k = op.kind
    if k == "CONV_2D":
        if op.kernel > 1:
            return "CONV_2D_KxK"
        h, w, _ = g.shape(op.inputs[0])
        return "CONV_2D_SE" if h * w == 1 else "CONV_2D_1x1"
    if k == "DEPTHWISE_CONV_2D":
        return "DEPTHWISE_CONV_2D_5x5" if op.kernel >= 5 else "DEPTHWISE_CONV_2D_3x3"
    if k in ("ADD", "MUL"):
        if len(op.inputs) == 1:  # the second operand is a constant
            return k + "_CONST"
        shapes = {g.shape(t) for t in op.inputs}
        return "MUL_BCAST" if k == "MUL" and len(shapes) > 1 else k
    if k not in OP_TYPES:
        raise ValueError(f"no latency type for op {k} ({op.name})")
    return k


def op_features(g: Graph, i: int) -> dict[str, float]:
    op = g.ops[i]
    act = sum(g.tensors[t].nbytes for t in op.inputs) + g.tensors[op.output].nbytes
    return {"macs": float(op.macs), "act_bytes": float(act),
            "out_bytes": float(g.tensors[op.output].nbytes),
            "weight_bytes": float(op.weights + 4 * op.biases), "fixed": 1.0}


def _graph_of(x, form: str = "cpu") -> Graph:
    return x if isinstance(x, Graph) else graph(x, form=form)


# --------------------------------------------------------------------------- one graph timed

BUSY_SHARE = 0.10  # run-queue waits above this share of the wall time: the machine was busy


@dataclass(frozen=True)
class Timing:
    """Wall-clock latency of one graph as ``edgeeff bench`` reports it (p50 of its frames),
    with how steady it was (p10, p90) and what it cost to find out.

    ``runqueue_share``: the share of the frames' wall time the interpreter's busiest thread
    spent waiting for a CPU (other work on the machine); it is reported, never subtracted."""

    p50_ms: float
    p10_ms: float
    p90_ms: float
    invokes: int
    seconds: float = 0.0
    runqueue_share: float = 0.0

    @property
    def spread(self) -> float:
        """p90 / p10 - 1."""
        return self.p90_ms / self.p10_ms - 1.0 if self.p10_ms > 0 else 0.0

    @property
    def busy(self) -> bool:
        return self.runqueue_share > BUSY_SHARE

    @classmethod
    def of(cls, wall_ms, seconds: float = 0.0, wait_ms=None) -> Timing:
        """From the frames' wall times (ms) and, optionally, each one's run-queue wait (ms)."""
        w = np.asarray(wall_ms, float)
        if w.size == 0:
            return cls(0.0, 0.0, 0.0, 0, seconds)
        share = 0.0
        if wait_ms is not None and len(wait_ms) and w.sum() > 0:
            share = float(min(np.sum(wait_ms) / w.sum(), 1.0))
        p10, p50, p90 = (float(np.percentile(w, q)) for q in (10, 50, 90))
        return cls(p50, p10, p90, int(w.size), float(seconds), share)


# --------------------------------------------------------------------------- the design matrix


def columns() -> list[tuple[str, str]]:
    """(op type, feature) of every coefficient, then ("graph", "fixed")."""
    cols = [(t, f) for t, feats in OP_TYPES.items() for f in FEATURES if f in feats]
    return cols + [("graph", "fixed")]


# Column scales: features are divided by these so that the coefficients of one fit are of
# similar magnitude (seconds per unit then become ms per scaled unit).
_SCALE = {"macs": 1e6, "act_bytes": 1e5, "out_bytes": 1e5, "weight_bytes": 1e5, "fixed": 1.0}


def row(x: ModelSpec | Graph) -> np.ndarray:
    """The graph's features summed per op type, in :func:`columns` order (scaled units)."""
    g = _graph_of(x)
    cols = columns()
    index = {c: j for j, c in enumerate(cols)}
    r = np.zeros(len(cols))
    for i in range(len(g.ops)):
        t = op_type(g, i)
        for f, v in op_features(g, i).items():
            j = index.get((t, f))
            if j is not None:
                r[j] += v / _SCALE[f]
    r[index[("graph", "fixed")]] = 1.0
    return r


# --------------------------------------------------------------------------- NNLS


def nnls(A: np.ndarray, b: np.ndarray, max_iter: int | None = None, tol: float = 1e-10
         ) -> np.ndarray:
    """min ||Ax - b|| subject to x >= 0 (Lawson & Hanson's active-set algorithm), numpy only."""
    A = np.asarray(A, float)
    b = np.asarray(b, float)
    m, n = A.shape
    x = np.zeros(n)
    passive = np.zeros(n, bool)
    max_iter = max_iter or 3 * n + 30
    w = A.T @ (b - A @ x)
    it = 0
    while (~passive).any() and (w[~passive] > tol).any():
        j = np.flatnonzero(~passive)[np.argmax(w[~passive])]
        passive[j] = True
        while True:
            it += 1
            if it > max_iter * 10:
                return x
            z = np.zeros(n)
            idx = np.flatnonzero(passive)
            z[idx] = np.linalg.lstsq(A[:, idx], b, rcond=None)[0]
            if (z[idx] > 0).all():
                x = z
                break
            neg = idx[z[idx] <= 0]
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = A.T @ (b - A @ x)
    return x


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class LatencyModel:
    """Fitted per-op coefficients (seconds per feature unit) and their provenance."""

    coefficients: dict[str, dict[str, float]]  # op type -> feature -> seconds per unit
    graph_s: float  # per-invoke constant, seconds
    threads: int | None = None
    runtime: str = ""
    runtime_version: str = ""
    cpu: str = ""
    form: str = MODEL_FORM
    version: int = MODEL_VERSION
    validation: dict = field(default_factory=dict)  # cross-validated error, design size, ...
    estimate: str = ""  # not measured on the device itself: how the numbers were obtained
    # the graph a spec is laid out as (edgeeff.core.graph.FORMS): "cpu" (model_int8.tflite),
    # "converter" (what TFLite Micro runs: one uint8 -> int8 QUANTIZE at the input)
    graph_form: str = "cpu"

    def predict_ms(self, x: ModelSpec | Graph) -> float:
        return sum(self.breakdown_ms(x).values())

    def breakdown_ms(self, x: ModelSpec | Graph) -> dict[str, float]:
        """Predicted milliseconds per op type (and the graph constant)."""
        g = _graph_of(x, self.graph_form)
        out: dict[str, float] = {"graph": 1000.0 * self.graph_s}
        for i in range(len(g.ops)):
            t = op_type(g, i)
            coef = self.coefficients.get(t, {})
            out[t] = out.get(t, 0.0) + 1000.0 * sum(coef.get(f, 0.0) * v
                                                    for f, v in op_features(g, i).items())
        return out

    # ---------------------------------------------------------------- the profile's table
    def to_toml_dict(self) -> dict:
        ops = {}
        for t, coef in self.coefficients.items():
            ops[t] = {UNITS[f][0]: _round(v * UNITS[f][1]) for f, v in coef.items()}
        d = {"form": self.form, "version": self.version}
        if self.threads is not None:
            d["threads"] = self.threads
        d.update(runtime=self.runtime, runtime_version=self.runtime_version, cpu=self.cpu)
        if self.graph_form != "cpu":
            d["graph_form"] = self.graph_form
        d[GRAPH_UNIT] = _round(self.graph_s * 1e6)
        if self.estimate:
            d["estimate"] = self.estimate
        if self.validation:
            d["validation"] = dict(self.validation)
        d["ops"] = ops
        return d

    @classmethod
    def from_toml_dict(cls, d: dict, where: str = "latency") -> LatencyModel:
        """Read the ``[latency]`` table back; ValueError naming the key on anything wrong."""
        def bad(k: str, why: str) -> ValueError:
            return ValueError(f"{where}.{k}: {why}")

        allowed = {"form", "version", "threads", "runtime", "runtime_version", "cpu", GRAPH_UNIT,
                   "validation", "ops", "estimate", "graph_form"}
        for k in d:
            if k not in allowed:
                raise bad(k, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        if d.get("form") != MODEL_FORM:
            raise bad("form", f"must be {MODEL_FORM!r}")
        ver = d.get("version")
        if isinstance(ver, bool) or not isinstance(ver, int) or ver < 1 or ver > MODEL_VERSION:
            raise bad("version", f"must be an integer 1..{MODEL_VERSION}")
        threads = d.get("threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise bad("threads", "must be a positive integer")
        for k in ("runtime", "runtime_version", "cpu", "estimate"):
            if k in d and not isinstance(d[k], str):
                raise bad(k, "must be a string")
        if d.get("graph_form", "cpu") not in FORMS:
            raise bad("graph_form", f"must be one of {', '.join(FORMS)}")
        g = d.get(GRAPH_UNIT, 0.0)
        if isinstance(g, bool) or not isinstance(g, (int, float)) or g < 0 \
                or not math.isfinite(g):
            raise bad(GRAPH_UNIT, "must be a non-negative number")
        ops = d.get("ops")
        if not isinstance(ops, dict) or not ops:
            raise bad("ops", "must be a table of op types")
        by_unit = {u: (f, s) for f, (u, s) in UNITS.items()}
        coefs: dict[str, dict[str, float]] = {}
        for t, tab in ops.items():
            if t not in OP_TYPES:
                raise bad(f"ops.{t}", f"unknown op type (known: {', '.join(OP_TYPES)})")
            if not isinstance(tab, dict):
                raise bad(f"ops.{t}", "must be a table")
            coefs[t] = {}
            for u, v in tab.items():
                if u not in by_unit:
                    raise bad(f"ops.{t}.{u}", f"unknown key (allowed: {', '.join(by_unit)})")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 \
                        or not math.isfinite(v):
                    raise bad(f"ops.{t}.{u}", "must be a non-negative number")
                f, scale = by_unit[u]
                coefs[t][f] = float(v) / scale
        val = d.get("validation", {})
        if not isinstance(val, dict):
            raise bad("validation", "must be a table")
        for k, v in val.items():  # free-form, but it is written to JSON (devices --json)
            if isinstance(v, float) and not math.isfinite(v):
                raise bad(f"validation.{k}", "must be a finite number")
        return cls(coefficients=coefs, graph_s=float(g) / 1e6, threads=threads,
                   runtime=d.get("runtime", ""), runtime_version=d.get("runtime_version", ""),
                   cpu=d.get("cpu", ""), form=d["form"], version=ver, validation=dict(val),
                   estimate=d.get("estimate", ""), graph_form=d.get("graph_form", "cpu"))


def _round(v: float) -> float:
    return float(f"{v:.6g}")


# --------------------------------------------------------------------------- fitting


def solve(rows: np.ndarray, ms: np.ndarray, ridge: float = 1e-3, debias: bool = True
          ) -> np.ndarray:
    """Non-negative coefficients (ms per scaled unit) minimising the *relative* squared error,
    with a small ridge so that collinear columns share rather than swing.

    Both pull the predictions low: least squares on ratios settles below a mean ratio of 1
    (it trades over-prediction of one graph for under-prediction of another unevenly), and the
    ridge shrinks every coefficient towards zero. ``debias`` scales the solution so that the
    mean of predicted / measured over the rows is 1: a prediction is then as likely high as
    low."""
    rows = np.asarray(rows, float)
    ms = np.asarray(ms, float)
    w = 1.0 / ms  # relative error
    A = rows * w[:, None]
    b = np.ones_like(ms)
    # columns that never vary carry no information: drop them (coefficient 0)
    used = np.flatnonzero(np.abs(rows).sum(axis=0) > 0)
    A = A[:, used]
    norms = np.linalg.norm(A, axis=0)
    norms[norms == 0] = 1.0
    An = A / norms
    if ridge > 0:
        An = np.vstack([An, math.sqrt(ridge) * np.eye(An.shape[1])])
        b = np.concatenate([b, np.zeros(An.shape[1])])
    x = np.zeros(rows.shape[1])
    x[used] = nnls(An, b) / norms
    if debias:
        q = rows @ x / ms
        if np.all(np.isfinite(q)) and q.mean() > 0:
            x = x / q.mean()
    return x


def from_solution(x: np.ndarray, **meta) -> LatencyModel:
    coefs: dict[str, dict[str, float]] = {}
    graph_s = 0.0
    for (t, f), v in zip(columns(), x):
        s = v / 1000.0 / _SCALE[f]  # ms per scaled unit -> seconds per unit
        if t == "graph":
            graph_s = s
        else:
            coefs.setdefault(t, {})[f] = s
    return LatencyModel(coefficients=coefs, graph_s=graph_s, **meta)


def from_timings(graphs: list, ms: list[float], ridge: float = 1e-3, **meta) -> LatencyModel:
    """A :class:`LatencyModel` solved from measured whole-graph latencies (specs or cost
    graphs): :func:`solve` on their rows, then :func:`from_solution`."""
    rows = np.array([row(g) for g in graphs])
    return from_solution(solve(rows, np.asarray(ms, float), ridge), **meta)


def errors(model: LatencyModel, graphs: list, ms: list[float]) -> np.ndarray:
    """Relative errors (predicted / measured - 1)."""
    pred = np.array([model.predict_ms(g) for g in graphs])
    return pred / np.asarray(ms, float) - 1.0


def summarize(err: np.ndarray, tolerance: float = 0.10) -> dict:
    err = np.asarray(err, float)
    return {"n": int(err.size),
            "within_10pct": round(float(np.mean(np.abs(err) <= tolerance)), 4),
            "median_abs_error": round(float(np.median(np.abs(err))), 4),
            "max_abs_error": round(float(np.max(np.abs(err))), 4)}


def cross_validate(rows: np.ndarray, ms: np.ndarray, groups: np.ndarray | None = None,
                   folds: int = 5, ridge: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Out-of-fold relative errors of each measurement (k-fold; ``groups`` keep the graphs of
    one spec, e.g. its prefixes, in the same fold)."""
    rows = np.asarray(rows, float)
    ms = np.asarray(ms, float)
    n = len(ms)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(uniq, rng.permutation(len(uniq)) % folds))
    fold = np.array([fold_of[gr] for gr in groups])
    err = np.zeros(n)
    for k in range(folds):
        test = fold == k
        if not test.any() or test.all():
            continue
        x = solve(rows[~test], ms[~test], ridge)
        err[test] = rows[test] @ x / ms[test] - 1.0
    return err

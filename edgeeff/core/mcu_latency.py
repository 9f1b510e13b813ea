"""Microcontroller latency from instruction counts: a per-op instruction model of the int8 graph
TFLite Micro runs, and the per-core cycles per instruction that turns a count into milliseconds.
Pure: standard library and numpy.

``edgeeff firmware --run`` counts, under QEMU ``-icount``, the instructions every op of a model
executes on a Cortex-M core (TFLite Micro + CMSIS-NN). Those counts are deterministic and
depend on the op's shapes, so they are modelled like the CPU latency model
(:mod:`edgeeff.core.latency`), op type by op type, in its features::

    instructions(op) = a[type] * MACs + b[type] * activation bytes (inputs + output)
                       + e[type] * output bytes + c[type] * weight bytes + d[type]

plus one constant per invoke (the interpreter outside the ops). The coefficients are fitted by
non-negative least squares on per-op counts of a few specs (``tools/mcu_op_counts.py``; counts
and fit in ``edgeeff/data/mcu_op_counts.json``). A core's cycles per instruction
(``edgeeff/data/mcu_cores.json``, fitted on published MLPerf Tiny board latencies by
``benchmarks/mcu_latency.py``) and a board's clock turn instructions into milliseconds, which is
the ``[latency]`` table ``tools/make_bundled_latency.py`` writes for a board whose core has one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from edgeeff.core import latency
from edgeeff.core.arch import ModelSpec
from edgeeff.core.artifacts import MCU_CORES, MCU_OP_COUNTS
from edgeeff.core.data import DATA_PACKAGE, package_data
from edgeeff.core.graph import Graph, graph

CORES_FILE = MCU_CORES  # per-core cycles per instruction, board clocks
COUNTS_FILE = MCU_OP_COUNTS
GRAPH_FORM = "converter"  # TFLite Micro runs the converter's graph (uint8 -> int8 QUANTIZE)


def tflm_graph(x: ModelSpec | Graph) -> Graph:
    """The int8 graph TFLite Micro runs for a spec (a graph is taken as it is)."""
    return x if isinstance(x, Graph) else graph(x, "uint8", GRAPH_FORM)


def _read(name: str) -> dict:
    return json.loads(package_data(DATA_PACKAGE, name).read_text("utf-8"))


# --------------------------------------------------------------------------- cores and boards


@dataclass(frozen=True)
class CoreTiming:
    """How a core's counted instructions become time: ``cycles_per_instruction`` (None where
    no published measurement calibrated it) and where it comes from."""

    core: str
    cycles_per_instruction: float | None
    basis: str


def core_timing(core: str) -> CoreTiming:
    c = _read(CORES_FILE)["cores"].get(core)
    if c is None:
        return CoreTiming(core, None, f"{core}: no calibration yet (no published TensorFlow "
                                      "Lite Micro + CMSIS-NN board latency used)")
    return CoreTiming(core, float(c["cycles_per_instruction"]), c["basis"])


def board(device_key: str) -> dict | None:
    """``{"core", "clock_hz"}`` of a bundled microcontroller profile, None if unknown."""
    return _read(CORES_FILE)["devices"].get(device_key.lower())


def instructions_to_ms(instructions: float, cpi: float, clock_hz: float) -> float:
    return cpi * instructions / clock_hz * 1000.0


# --------------------------------------------------------------------------- the model


def features_of(op_type: str) -> tuple[str, ...]:
    """The features an op type's instruction count is fitted on: the CPU model's
    (:data:`edgeeff.core.latency.OP_TYPES`), and for the MAC-carrying types the output bytes
    too, since CMSIS-NN requantizes each output element (tens of instructions) while the
    input is read per MAC: a 1x1 expand and a project of equal MACs differ by 3x."""
    f = latency.OP_TYPES[op_type]
    return f + ("out_bytes",) if "macs" in f else f


def _features(g: Graph, i: int) -> dict[str, float]:
    allowed = features_of(latency.op_type(g, i))
    return {f: v for f, v in latency.op_features(g, i).items() if f in allowed}


@dataclass(frozen=True)
class InstructionModel:
    """Instructions per feature unit, per op type (:data:`edgeeff.core.latency.OP_TYPES`), and
    per invoke, of one core's TFLite Micro + CMSIS-NN build."""

    core: str
    coefficients: dict[str, dict[str, float]]
    graph_instructions: float = 0.0
    source: str = ""
    validation: dict = field(default_factory=dict)

    def per_op(self, x: ModelSpec | Graph) -> list[float]:
        """Predicted instructions of each op of the TFLM graph, in execution order."""
        g = tflm_graph(x)
        out = []
        for i in range(len(g.ops)):
            c = self.coefficients.get(latency.op_type(g, i), {})
            out.append(sum(c.get(f, 0.0) * v for f, v in _features(g, i).items()))
        return out

    def predict(self, x: ModelSpec | Graph) -> float:
        """Predicted instructions of one invoke."""
        return self.graph_instructions + sum(self.per_op(x))

    def latency_model(self, cpi: float, clock_hz: float, **meta) -> latency.LatencyModel:
        """The per-op latency model at ``cpi`` cycles per instruction and ``clock_hz``: every
        coefficient times cpi / clock (seconds per feature unit), on the TFLM graph."""
        k = cpi / clock_hz
        coefs = {t: {f: v * k for f, v in c.items()} for t, c in self.coefficients.items()}
        return latency.LatencyModel(coefs, self.graph_instructions * k, graph_form=GRAPH_FORM,
                                    **meta)

    def to_dict(self) -> dict:
        return {"core": self.core, "source": self.source,
                "graph_instructions": round(self.graph_instructions, 1),
                "instructions_per_unit": {t: {f: float(f"{v:.6g}") for f, v in c.items()}
                                          for t, c in self.coefficients.items()},
                "validation": dict(self.validation)}

    @classmethod
    def from_dict(cls, d: dict) -> InstructionModel:
        return cls(d["core"], {t: dict(c) for t, c in d["instructions_per_unit"].items()},
                   float(d["graph_instructions"]), d.get("source", ""),
                   dict(d.get("validation", {})))


def stored(core: str) -> InstructionModel | None:
    """The fitted model of ``core`` in edgeeff/data/mcu_op_counts.json (None: not counted)."""
    m = _read(COUNTS_FILE).get("model", {}).get(core)
    return None if m is None else InstructionModel.from_dict(m)


def stored_runs(core: str | None = None) -> list[dict]:
    """The counted runs: role (fit / held_out), spec, instructions in total and per op."""
    return [r for r in _read(COUNTS_FILE).get("runs", []) if core is None or r["core"] == core]


# --------------------------------------------------------------------------- fitting


def _run_graph(run: dict) -> Graph:
    g = tflm_graph(ModelSpec.from_dict(run["spec"]))
    kinds = [k for k, _ in run["per_op"]]
    if kinds != [op.kind for op in g.ops]:
        raise ValueError(f"{run.get('name')}: the counted ops ({len(kinds)}) are not the TFLM "
                         f"graph's ({len(g.ops)}) op for op")
    return g


def fit_counts(runs: list[dict], source: str = "") -> InstructionModel:
    """Fit the per-op coefficients on counted runs (``tools/mcu_op_counts.py``'s records):
    one non-negative least-squares fit per op type on its ops' counts, relative error
    weighted (large and small ops of a type alike), and the invoke constant as the mean
    instructions outside the ops."""
    rows: dict[str, list[tuple[dict, float]]] = {}
    outside = []
    for r in runs:
        g = _run_graph(r)
        for i, (_, n) in enumerate(r["per_op"]):
            rows.setdefault(latency.op_type(g, i), []).append((_features(g, i), float(n)))
        outside.append(r["instructions"] - sum(n for _, n in r["per_op"]))
    coefs: dict[str, dict[str, float]] = {}
    for t, obs in rows.items():
        feats = [f for f in features_of(t) if any(o[f] for o, _ in obs)]
        A = np.array([[o[f] for f in feats] for o, _ in obs])
        y = np.array([n for _, n in obs])
        w = 1.0 / np.maximum(y, 1.0)
        Aw = A * w[:, None]
        norms = np.linalg.norm(Aw, axis=0)
        norms[norms == 0] = 1.0
        x = latency.nnls(Aw / norms, y * w) / norms
        coefs[t] = {f: float(v) for f, v in zip(feats, x) if v > 0}
    core = runs[0]["core"] if runs else ""
    return InstructionModel(core, coefs, float(np.mean(outside)) if outside else 0.0,
                            source or f"fitted on {len(runs)} counted specs "
                                      f"({', '.join(r.get('name', '?') for r in runs)})")


def check_run(model: InstructionModel, run: dict) -> dict:
    """The model against one counted run: whole-invoke error and the share of ops (those of
    at least 0.1 % of the invoke) predicted within 10 %."""
    g = _run_graph(run)
    pred_ops = model.per_op(g)
    pred = model.graph_instructions + sum(pred_ops)
    big = [(p, n) for p, (_, n) in zip(pred_ops, run["per_op"]) if n >= 1e-3 * run["instructions"]]
    within = np.mean([abs(p / n - 1) <= 0.10 for p, n in big]) if big else 1.0
    return {"counted": int(run["instructions"]), "predicted": float(pred),
            "error": float(pred / run["instructions"] - 1), "ops_within_10pct": float(within)}

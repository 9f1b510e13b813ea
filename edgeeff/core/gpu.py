"""Which ops the TFLite GPU delegate takes, and the GPU report an export writes.

The GPU delegate runs a graph in partitions: an op it does not take falls back to the CPU and
every fallback costs a copy between GPU and CPU memory. :data:`GPU_OPS` is the delegate's rule
for every op an edgeeff graph can hold, kept as data: TFLite's own compatibility checker
(``tensorflow/lite/tools/versioning/gpu_compatibility.cc``, ``CheckGpuDelegateCompatibility``)
written down op by op. An op not in the table falls back. :func:`check_op` applies it to one op,
:func:`graph_fallbacks` to ``fit``'s graph (:mod:`edgeeff.core.graph`), :func:`report` to a
.tflite file read back op by op.

Why a table and not only the Analyzer: ``tf.lite.experimental.Analyzer.analyze(...,
gpu_compatibility=True)`` runs offline, but the TensorFlow 2.21 wheel prints "looks compatible"
for any model, SEGMENT_SUM and TOPK_V2 included (its per-op check is not compiled in). The
export runs it on a canary first (:class:`AnalyzerResult.checks_ops`) and records both; where
the Analyzer does check, the test suite holds the table to it op by op.

Pure: standard library only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

# op -> the delegate's condition (gpu_compatibility.cc); "" = taken whenever it is well formed
GPU_OPS: dict[str, str] = {
    "ADD": "two inputs; broadcast only 4-D with 3-D, [1, 1] or [b, c] (add_mul_broadcast)",
    "MUL": "two inputs; of equal rank, one not smaller than the other in every dimension "
           "(squeeze-excite's [1, h, w, c] * [1, 1, 1, c] is); broadcast as ADD",
    "CONV_2D": "strides and dilation >= 1; fused NONE/RELU/RELU6/TANH",
    "DEPTHWISE_CONV_2D": "strides and dilation >= 1; fused NONE/RELU/RELU6/TANH",
    "FULLY_CONNECTED": "default weights format, non-constant input, at most 2 runtime inputs",
    "MEAN": "constant int32 axes",
    "LOGISTIC": "",
    "HARD_SWISH": "",
    "RELU": "",
    "RELU6": "",
    "SOFTMAX": "beta == 1",
    "QUANTIZE": "",
    "DEQUANTIZE": "not int16 input",
    "RESHAPE": "",
    "AVERAGE_POOL_2D": "",
    "PAD": "3-D or 4-D paddings",
    "CONCATENATION": "",
}
SOURCE = ("edgeeff.core.gpu.GPU_OPS: the rules of TFLite's gpu_compatibility.cc "
          "(CheckGpuDelegateCompatibility) for the ops edgeeff graphs hold")
CANARY_OP = "SEGMENT_SUM"  # not in the checker's list: an Analyzer that checks must flag it


def _broadcast_ok(a: Sequence[int], b: Sequence[int]) -> bool:
    """gpu_compatibility.cc's CheckAddMulBroadcastCompatibility (without enhanced broadcast)."""
    if len(a) <= 1 or len(b) <= 1 or len(a) == len(b):
        return True
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    if len(longer) == 4 and len(shorter) == 3 and longer[0] == 1:
        return True
    if len(longer) == 4 and len(shorter) == 2 and longer[0] == 1 and tuple(shorter) == (1, 1):
        return True
    return len(longer) == 4 and len(shorter) == 2 and longer[0] == shorter[0] and \
        longer[3] == shorter[1]


def check_op(kind: str, in_shapes: Sequence[Sequence[int]] = (),
             in_dtypes: Sequence[str] = ()) -> str | None:
    """Why the GPU delegate does not take this op (None: it does). ``in_shapes`` are every
    input's shape, batch included, constants too, in operand order."""
    if kind not in GPU_OPS:
        return f"{kind} is not an op the GPU delegate runs"
    if kind == "DEQUANTIZE" and tuple(in_dtypes[:1]) == ("int16",):
        return "DEQUANTIZE of int16"
    if kind in ("ADD", "MUL") and len(in_shapes) >= 2:
        a, b = tuple(in_shapes[0]), tuple(in_shapes[1])
        if kind == "MUL" and len(a) == len(b):
            if any(x < y for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b)):
                return f"MUL of {list(a)} and {list(b)}: neither is the larger in every dimension"
        elif not _broadcast_ok(a, b):
            return f"{kind} broadcast of {list(a)} and {list(b)}"
    return None


@dataclass(frozen=True)
class OpVerdict:
    """One op the delegate does not take: its position in the graph, builtin and the reason."""

    index: int
    kind: str
    reason: str


def graph_fallbacks(g) -> list[OpVerdict]:
    """The ops of ``fit``'s graph (:class:`edgeeff.core.graph.Graph`, shapes without the
    batch) that fall back to the CPU under the GPU delegate."""
    out = []
    for i, op in enumerate(g.ops):
        shapes = [(1, *s) for s in op.in_shapes]
        why = check_op(op.kind, shapes, [g.tensors[t].dtype for t in op.inputs])
        if why:
            out.append(OpVerdict(i, op.kind, why))
    return out


# --------------------------------------------------------------------------- the Analyzer


_OP_LINE = re.compile(r"^\s*Op#(\d+)\s+([A-Z0-9_]+)\(")
_WARN = "GPU COMPATIBILITY WARNING:"
_OK = "looks compatible with GPU delegate"


@dataclass(frozen=True)
class AnalyzerResult:
    """What ``tf.lite.experimental.Analyzer`` printed for one model: its ops in order, the ops
    it flagged (index, message), its verdict, and whether it checks ops at all (it flagged a
    canary op the delegate never runs; None when not probed)."""

    ops: tuple[str, ...]
    flagged: tuple[tuple[int, str], ...]
    compatible: bool
    checks_ops: bool | None = None
    tensorflow: str = ""


def parse_analyzer(text: str, checks_ops: bool | None = None,
                   tensorflow: str = "") -> AnalyzerResult:
    """The Analyzer's printed report -> :class:`AnalyzerResult` (first subgraph's op indices;
    a warning line belongs to the op line above it)."""
    ops: list[str] = []
    flagged: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = _OP_LINE.match(line)
        if m:
            ops.append(m.group(2))
            continue
        s = line.strip()
        if s.startswith(_WARN) and ops and "Subgraph#" not in s:
            flagged.append((len(ops) - 1, s[len(_WARN):].strip()))
    return AnalyzerResult(tuple(ops), tuple(flagged), _OK in text and not flagged,
                          checks_ops, tensorflow)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class GpuReport:
    """GPU-delegate compatibility of one .tflite file (``gpu_report.json`` holds one per model):
    op counts by builtin, the ops that fall back (by :data:`GPU_OPS`), the number of GPU
    partitions that leaves, and the Analyzer's own verdict on the same file."""

    model: str
    ops: int
    delegated: dict[str, int]
    fallback: tuple[OpVerdict, ...]
    partitions: int
    basis: str = SOURCE
    analyzer: AnalyzerResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fully_delegated(self) -> bool:
        return not self.fallback

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fully_delegated"] = self.fully_delegated
        return d

    def summary(self) -> str:
        """One line for the export log and the model card."""
        if self.fully_delegated:
            head = f"all {self.ops} ops on the GPU delegate (1 partition)"
        else:
            kinds = ", ".join(sorted({f.kind for f in self.fallback}))
            head = (f"{len(self.fallback)} of {self.ops} ops fall back to the CPU ({kinds}); "
                    f"{self.partitions} GPU partitions")
        a = self.analyzer
        if a is None:
            return f"{self.model}: {head}"
        if a.checks_ops is False:
            tail = "Analyzer: 'compatible', but this TensorFlow's Analyzer checks no op"
        else:
            tail = f"Analyzer: {'compatible' if a.compatible else f'{len(a.flagged)} ops flagged'}"
        return f"{self.model}: {head}; {tail}"


def report(model: str, ops: Sequence[tuple[str, Sequence[Sequence[int]], Sequence[str]]],
           analyzer: AnalyzerResult | None = None) -> GpuReport:
    """The report for a model given as (builtin, input shapes, input dtypes) per op, in order."""
    fallback = []
    for i, (kind, shapes, dtypes) in enumerate(ops):
        why = check_op(kind, shapes, dtypes)
        if why:
            fallback.append(OpVerdict(i, kind, why))
    bad = {f.index for f in fallback}
    partitions, prev = 0, False
    for i in range(len(ops)):
        on = i not in bad
        partitions += int(on and not prev)
        prev = on
    notes = []
    if analyzer is not None and analyzer.checks_ops is False:
        notes.append(f"tf.lite.experimental.Analyzer (TensorFlow {analyzer.tensorflow}) did not "
                     f"flag a {CANARY_OP} canary: its GPU check is not compiled into this build, "
                     "so its 'compatible' is no evidence; the table above is")
    delegated = Counter(k for i, (k, _, _) in enumerate(ops) if i not in bad)
    return GpuReport(model, len(ops), dict(sorted(delegated.items())), tuple(fallback),
                     partitions, analyzer=analyzer, notes=tuple(notes))

"""EdgeTPU: an op-by-op compatibility report and, when installed, ``edgetpu_compiler``.

The report checks the int8 graph against the Coral compiler's documented requirements
("TensorFlow models on the Edge TPU", coral.ai/docs/edgetpu/models-intro): every tensor 8-bit
quantised, static shapes, at most the 3 innermost dimensions larger than 1, and only the listed
ops. The compiler maps ops in graph order and stops at the first one it cannot map: that op and
everything after it run on the CPU. Parameters beyond the ~8 MB on-chip cache stream from the
host on every inference.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edgeeff.core.fsutil import write_text_atomic
from edgeeff.device import tflite_graph

# op -> documented limitation ("" = none)
SUPPORTED = {
    "ADD": "", "AVERAGE_POOL_2D": "no fused activation", "CONCATENATION": "",
    "CONV_2D": "", "DEPTHWISE_CONV_2D": "no dilation", "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "default weight format only; 1-D output", "HARD_SWISH": "",
    "L2_NORMALIZATION": "", "LOGISTIC": "", "MAXIMUM": "", "MAX_POOL_2D": "no fused activation",
    "MEAN": "reduction along x and/or y only", "MINIMUM": "", "MUL": "", "PACK": "",
    "PAD": "padding along x and/or y only", "PRELU": "", "QUANTIZE": "", "REDUCE_MAX": "",
    "REDUCE_MIN": "", "RELU": "", "RELU6": "", "RELU_N1_TO_1": "", "RESHAPE": "",
    "RESIZE_BILINEAR": "3-D input/output", "RESIZE_NEAREST_NEIGHBOR": "3-D input/output",
    "RSQRT": "", "SLICE": "", "SOFTMAX": "1-D input of at most 16,000 elements",
    "SPACE_TO_DEPTH": "", "SPLIT": "", "SQUARED_DIFFERENCE": "", "SQUEEZE": "",
    "STRIDED_SLICE": "", "SUB": "", "SUM": "", "TANH": "", "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}
PARAM_CACHE_BYTES = 8 * 1024 * 1024
INSTALL_HINT = ("edgetpu_compiler is not on PATH: it runs on x86-64 Debian/Ubuntu; install it from "
                "Coral's apt repository ('sudo apt-get install edgetpu-compiler', see "
                "https://coral.ai/docs/edgetpu/compiler/), then re-run this export")


def _op_problem(g: tflite_graph.TFLiteGraph, op: tflite_graph.OpInfo) -> str | None:
    if op.name not in SUPPORTED:
        return "operation not supported by the Edge TPU"
    for t in op.inputs + op.outputs:
        if t < 0:
            continue
        ten = g.tensors[t]
        if ten.dtype not in ("int8", "uint8", "int32"):
            return f"tensor {ten.name!r} is {ten.dtype}, not 8-bit quantised"
        if ten.dtype == "int32" and not ten.is_constant:
            return f"tensor {ten.name!r} is a non-constant int32"
        if not ten.is_constant and any(d > 1 for d in ten.shape[:-3]):
            return f"tensor {ten.name!r} has more than 3 dimensions larger than 1"
        if any(d < 0 for d in ten.shape):
            return f"tensor {ten.name!r} has a dynamic shape"
    if op.name == "SOFTMAX":
        n = 1
        for d in g.tensors[op.inputs[0]].shape:
            n *= d
        if n > 16000:
            return "softmax input larger than 16,000 elements"
    return None


def compatibility(model: bytes) -> dict:
    g = tflite_graph.read(model)
    rows, first_cpu = [], None
    for op in g.ops:
        problem = _op_problem(g, op)
        if problem and first_cpu is None:
            first_cpu = op.index
        where = "edgetpu" if first_cpu is None else "cpu"
        rows.append({"index": op.index, "op": op.name, "runs_on": where,
                     "reason": problem or ("after the first unmapped op" if where == "cpu" else ""),
                     "limitation": SUPPORTED.get(op.name, "")})
    params = g.constant_bytes()
    mapped = sum(1 for r in rows if r["runs_on"] == "edgetpu")
    return {
        "ops_total": len(rows),
        "ops_on_edgetpu": mapped,
        "first_cpu_op": None if first_cpu is None else rows[first_cpu],
        "parameter_bytes": params,
        "parameter_cache_bytes": PARAM_CACHE_BYTES,
        "fits_parameter_cache": params <= PARAM_CACHE_BYTES,
        "ops": rows,
    }


def format_report(rep: dict) -> str:
    lines = [f"EdgeTPU compatibility: {rep['ops_on_edgetpu']}/{rep['ops_total']} ops map to "
             "the Edge TPU"]
    if rep["first_cpu_op"]:
        f = rep["first_cpu_op"]
        lines.append(f"graph is cut at op #{f['index']} {f['op']}: {f['reason']}; it and every "
                     "later op run on the CPU")
    mb = rep["parameter_bytes"] / 2**20
    lines.append(f"parameters {mb:.2f} MB: " + (
        "fit the ~8 MB on-chip cache" if rep["fits_parameter_cache"]
        else "exceed the ~8 MB on-chip cache; the rest streams from the host each inference"))
    counts: dict[tuple[str, str], int] = {}
    for r in rep["ops"]:
        counts[(r["op"], r["runs_on"])] = counts.get((r["op"], r["runs_on"]), 0) + 1
    for (op, where), n in sorted(counts.items()):
        lim = SUPPORTED.get(op, "unsupported")
        lines.append(f"  {op:<20} x{n:<4} {where:<8} {lim}")
    return "\n".join(lines) + "\n"


def compile_model(int8_path: Path, folder: Path) -> dict:
    """Run edgetpu_compiler when it is installed; never installs anything itself."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return {"compiled": False, "message": INSTALL_HINT}
    r = subprocess.run([exe, "--show_operations", "-o", str(folder), str(int8_path)],
                       capture_output=True, text=True, timeout=600)
    write_text_atomic(folder / "edgetpu_compiler.log", r.stdout + r.stderr)
    out = folder / (int8_path.stem + "_edgetpu.tflite")
    return {"compiled": r.returncode == 0 and out.is_file(), "returncode": r.returncode,
            "output": out.name if out.is_file() else None, "log": "edgetpu_compiler.log"}

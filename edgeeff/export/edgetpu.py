"""EdgeTPU: an op-by-op compatibility report and, when installed, ``edgetpu_compiler``.

The report checks the int8 graph against the Coral compiler's documented requirements
("TensorFlow models on the Edge TPU", https://coral.ai/docs/edgetpu/models-intro/): every
tensor 8-bit quantised, static shapes, at most the 3 innermost dimensions larger than 1, and
only the listed ops. The compiler maps ops in graph order and stops at the first one it cannot
map: that op and everything after it run on the CPU.

Three more checks, each from the sources named next to its table below:

* **op versions**: edgetpu_compiler 16 parses a model with its own copy of TensorFlow Lite
  and rejects the whole model ("Didn't find op for builtin opcode ... version ...") when an op
  version is newer than that copy knows; the ops left on the CPU run in the device's TFLite
  runtime, which for Coral's libedgetpu is TFLite 2.5 (:data:`OP_VERSION_TFLITE`,
  :data:`EDGETPU_RUNTIMES`);
* **runtime version** (``--edgetpu-runtime N``, the compiler's ``-m N``): a compiled model
  refuses to load on an Edge TPU runtime older than N;
* **parameter memory**: the ~8 MB on-chip SRAM caches parameters, but the compiler offers a
  model less than that; the report predicts on-chip and off-chip bytes against
  :data:`USABLE_CACHE_BYTES` and says the margin.

When ``edgetpu_compiler`` runs, its log is parsed (:func:`parse_compiler_log`) and its numbers
(ops mapped, subgraphs, on-chip and off-chip memory) go into the report next to the
prediction.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edgeeff.core import artifacts as A
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import write_json_atomic, write_text_atomic
from edgeeff.core.graph import Graph, Op
from edgeeff.tflite import reader

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

# ---------------------------------------------------------------------------------------------
# Op versions. For each op: the TensorFlow release that introduced version 1, 2, 3, ... of it,
# from TFLite's own table, tensorflow/lite/tools/versioning/runtime_version.cc
# (https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/tools/versioning/runtime_version.cc).
# A version past the end of a tuple is newer than that table (TF >= 2.11): treated as too new.
OP_VERSION_TFLITE = {
    "ADD": ("1.5", "1.14", "2.4", "2.6"),
    "AVERAGE_POOL_2D": ("1.5", "1.14", "2.3"),
    "CONCATENATION": ("1.5", "1.14", "2.3"),
    "CONV_2D": ("1.5", "1.14", "1.14", "2.3", "2.4", "2.9"),
    "DEPTHWISE_CONV_2D": ("1.5", "1.12", "1.14", "2.2", "2.3", "2.3"),
    "DEQUANTIZE": ("1.13.1", "1.14", "1.15", "2.2", "2.7"),
    "EXP": ("1.7",),
    "EXPAND_DIMS": ("1.10",),
    "FULLY_CONNECTED": ("1.5", "1.10", "1.14", "1.14", "2.0", "2.1", "2.3", "2.3", "2.3"),
    "HARD_SWISH": ("1.15",),
    "L2_NORMALIZATION": ("1.5", "1.14"),
    "LOGISTIC": ("1.14", "1.14", "2.3"),
    "MAXIMUM": ("1.14", "1.14", "2.3", "2.3"),
    "MAX_POOL_2D": ("1.5", "1.14", "2.3"),
    "MEAN": ("1.6", "1.14", "2.4"),
    "MINIMUM": ("1.14", "1.14", "2.3", "2.3"),
    "MUL": ("1.5", "1.14", "1.15", "2.3", "2.6"),
    "PACK": ("1.11", "1.14", "2.3"),
    "PAD": ("1.5", "1.14", "2.4", "2.6"),
    "PRELU": ("1.8",),
    "QUANTIZE": ("1.14", "1.15", "2.7"),
    "REDUCE_MAX": ("1.11", "1.14", "2.5"),
    "REDUCE_MIN": ("1.11", "1.14", "2.5"),
    "RELU": ("1.5", "2.1", "2.5"),
    "RELU6": ("1.5", "1.14", "2.5"),
    "RELU_N1_TO_1": ("1.5",),
    "RESHAPE": ("1.5",),
    "RESIZE_BILINEAR": ("1.7", "1.14", "2.2", "2.5"),
    "RESIZE_NEAREST_NEIGHBOR": ("1.13.1", "1.14", "2.3", "2.4"),
    "RSQRT": ("1.10", "2.5"),
    "SLICE": ("1.14", "1.14", "1.14", "2.4", "2.5"),
    "SOFTMAX": ("1.5", "1.14", "2.3"),
    "SPACE_TO_DEPTH": ("1.5", "1.14"),
    "SPLIT": ("1.5", "1.14", "1.14", "2.3"),
    "SQUARED_DIFFERENCE": ("1.13.1", "2.5"),
    "SQUEEZE": ("1.6", "2.5"),
    "STRIDED_SLICE": ("1.6", "1.14", "2.1", "2.2", "2.5", "2.6"),
    "SUB": ("1.6", "1.14", "2.3", "2.4", "2.4"),
    "SUM": ("1.10", "1.15"),
    "TANH": ("1.14", "1.14", "2.3"),
    "TRANSPOSE": ("1.6", "1.14", "1.15", "2.3", "2.4"),
    "TRANSPOSE_CONV": ("1.9", "2.2", "2.3"),
}
# The TensorFlow Lite that edgetpu_compiler 16.0.384591198 parses models with. Not published;
# bounded by public compiler-16 logs rejecting versions from TF 2.7 (QUANTIZE v3, edgetpu#879),
# 2.9 (CONV_2D v6, edgetpu#631) and later (TRANSPOSE_CONV v4, edgetpu#845; EXP v2,
# tflite-micro#2633), and taken as TF 2.5, the version Coral's libedgetpu of the same release is
# built against (edgetpu#812). Versions introduced in TF 2.6 may parse: edgeeff calls them
# unverified rather than rejected.
COMPILER16_TFLITE = "2.5"
COMPILER16_REJECTS_FROM = "2.7"
COMPILER_VERSION = "16.0.384591198"
# Edge TPU runtime versions (libedgetpu api/runtime_version.h: kMinValidRuntimeVersion = 10,
# kCurrent = 14, https://github.com/google-coral/libedgetpu/blob/master/api/runtime_version.h).
# A model compiled for runtime N fails on an older runtime with "Package requires runtime version
# (N), which is newer than this runtime version (M)" (driver/package_registry.cc); compiler 16
# writes 14 unless told -m (edgetpu#435, jsk-ros-pkg/coral_usb_ros#78).
EDGETPU_RUNTIMES = {
    14: {"libedgetpu": "16.0 (Coral release 'grouper', 2021; libedgetpu1-std/-max 16.0)",
         "host_tflite": "2.5", "source": "https://github.com/google-coral/edgetpu/issues/435"},
    13: {"libedgetpu": "15.0 (Coral release 'frogfish', edgetpu_runtime_20210119)",
         "host_tflite": "2.5", "source": "https://github.com/google-coral/edgetpu/issues/464"},
    12: {"libedgetpu": "older than 15.0", "host_tflite": None, "source": ""},
    11: {"libedgetpu": "older than 15.0", "host_tflite": None, "source": ""},
    10: {"libedgetpu": "older than 15.0", "host_tflite": None, "source": ""},
}
DEFAULT_RUNTIME = 14

# ---------------------------------------------------------------------------------------------
# Parameter memory. The Edge TPU has about 8 MB of SRAM for parameters (Coral, "Edge TPU
# Compiler", parameter data caching, https://coral.ai/docs/edgetpu/compiler/). Public compiler
# logs (tests/fixtures/edgetpu_logs/SOURCES.md) show what it offers one model ("on-chip used" +
# "remaining"): 6.06-7.16 MiB to the models that filled it (6.89-7.06 MiB with compiler 16),
# never the full 8 MiB; three models were offered only 1.1-3.0 MiB. edgeeff budgets 6.0 MiB, 75 %
# of the nominal cache and below every offer to a model that filled it; the off-chip range
# spans the offers up to MAX_OFFERED_BYTES.
PARAM_CACHE_BYTES = 8 * 1024 * 1024
USABLE_CACHE_BYTES = 6 * 1024 * 1024
MAX_OFFERED_BYTES = int(7.2 * 1024 * 1024)  # the largest offer seen (7.16 MiB), rounded up
# compiled parameters against the int8 model's (on-chip + off-chip against input size, same
# logs, models with nearly every op on the Edge TPU); one small model grew 8.8x (edgetpu#169)
COMPILED_GROWTH = (0.93, 1.26)

INSTALL_HINT = ("edgetpu_compiler is not on PATH: it runs on x86-64 Debian/Ubuntu; install it from "
                "Coral's apt repository ('sudo apt-get install edgetpu-compiler', see "
                "https://coral.ai/docs/edgetpu/compiler/), then re-run this export")


def check_runtime(n: int | None) -> int:
    """The Edge TPU runtime version to compile for (``-m``); EdgeeffError if compiler 16 can't."""
    if n is None:
        return DEFAULT_RUNTIME
    if n not in EDGETPU_RUNTIMES:
        raise EdgeeffError(f"--edgetpu-runtime {n}: edgetpu_compiler 16 compiles for Edge TPU "
                           f"runtime versions {min(EDGETPU_RUNTIMES)} to {max(EDGETPU_RUNTIMES)}")
    return n


def _tf_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def introduced_in(op: str, version: int) -> str | None:
    """The TensorFlow release that introduced ``op`` version ``version`` (None: not in the table)."""
    vs = OP_VERSION_TFLITE.get(op)
    if vs is None or not 1 <= version <= len(vs):
        return None
    return vs[version - 1]


def max_version(op: str, tflite: str) -> int | None:
    """The newest version of ``op`` that TensorFlow Lite ``tflite`` knows (None: op not tabled)."""
    vs = OP_VERSION_TFLITE.get(op)
    if vs is None:
        return None
    return max((i + 1 for i, v in enumerate(vs) if _tf_key(v) <= _tf_key(tflite)), default=0)


def check_op_version(op: str, version: int, on_cpu: bool, runtime: int) -> dict:
    """One op code against compiler 16's parser and (for CPU ops) the runtime's TFLite."""
    intro = introduced_in(op, version)
    row = {"op": op, "version": version, "introduced_in_tflite": intro,
           "compiler16_max": max_version(op, COMPILER16_TFLITE), "compiler16": "ok",
           "runs_on": "cpu" if on_cpu else "edgetpu", "runtime": "ok", "note": ""}
    if op.startswith("CUSTOM:") or op not in OP_VERSION_TFLITE:
        row["compiler16"] = row["runtime"] = "unknown"
        row["note"] = "op not in edgeeff's version table"
        return row
    if intro is None or _tf_key(intro) >= _tf_key(COMPILER16_REJECTS_FROM):
        row["compiler16"] = "rejected"
        row["note"] = (f"{op} v{version} needs TFLite {intro or '> 2.11'}: edgetpu_compiler 16 "
                       f"parses up to v{row['compiler16_max']} and refuses the whole model")
    elif _tf_key(intro) > _tf_key(COMPILER16_TFLITE):
        row["compiler16"] = "unverified"
        row["note"] = (f"{op} v{version} needs TFLite {intro}: newer than the TFLite "
                       f"{COMPILER16_TFLITE} edgeeff assumes in compiler 16")
    host = EDGETPU_RUNTIMES[runtime]["host_tflite"]
    if on_cpu:
        if host is None:
            row["runtime"] = "unknown"
        elif _tf_key(intro or "99") > _tf_key(host):
            row["runtime"] = "rejected"
            row["note"] = (row["note"] + "; " if row["note"] else "") + (
                f"runs on the CPU in TFLite {host} (libedgetpu {runtime}'s), which has "
                f"{op} up to v{max_version(op, host)}")
    return row


# --------------------------------------------------------------------------- compatibility


def _op_problem(g: Graph, op: Op) -> str | None:
    if op.kind not in SUPPORTED:
        return "operation not supported by the Edge TPU"
    for t in op.all_inputs + op.all_outputs:
        if t < 0:
            continue
        ten = g.tensors[t]
        if ten.dtype not in ("int8", "uint8", "int32"):
            return f"tensor {ten.name!r} is {ten.dtype}, not 8-bit quantised"
        if ten.dtype == "int32" and not ten.is_constant:
            return f"tensor {ten.name!r} is a non-constant int32"
        if not ten.is_constant and any(d > 1 for d in ten.file_shape[:-3]):
            return f"tensor {ten.name!r} has more than 3 dimensions larger than 1"
        if any(d < 0 for d in ten.file_shape):
            return f"tensor {ten.name!r} has a dynamic shape"
    if op.kind == "SOFTMAX":
        n = 1
        for d in g.tensors[op.all_inputs[0]].file_shape:
            n *= d
        if n > 16000:
            return "softmax input larger than 16,000 elements"
    return None


def predict_memory(parameter_bytes: int, usable: int = USABLE_CACHE_BYTES) -> dict:
    """On-chip and off-chip parameter bytes predicted for ``parameter_bytes`` of Edge TPU ops."""
    on = min(parameter_bytes, usable)
    lo, hi = COMPILED_GROWTH
    return {
        "parameter_bytes": parameter_bytes,
        "usable_cache_bytes": usable,
        "on_chip_bytes": on,
        "off_chip_bytes": parameter_bytes - on,
        # the compiled layout is 0.93-1.26x the int8 parameters in public logs, and the cache
        # offered 6.06-7.16 MiB
        "off_chip_bytes_range": [max(0, int(parameter_bytes * lo) - MAX_OFFERED_BYTES),
                                 max(0, int(parameter_bytes * hi) - usable)],
        "fits": parameter_bytes * hi <= usable,
        "margin": (f"budget {usable / 2**20:.1f} MiB of the nominal {PARAM_CACHE_BYTES / 2**20:.0f} "
                   "MiB: public compiler logs offered 6.06-7.16 MiB to models that filled the "
                   "cache, and only 1.1-3.0 MiB to three others"),
    }


def compatibility(model: bytes, runtime: int | None = None) -> dict:
    runtime = check_runtime(runtime)
    g = reader.read(model)
    rows, first_cpu = [], None
    for i, op in enumerate(g.ops):
        problem = _op_problem(g, op)
        if problem and first_cpu is None:
            first_cpu = i
        where = "edgetpu" if first_cpu is None else "cpu"
        rows.append({"index": i, "op": op.kind, "runs_on": where,
                     "reason": problem or ("after the first unmapped op" if where == "cpu" else ""),
                     "limitation": SUPPORTED.get(op.kind, "")})
    cpu_ops = {r["op"] for r in rows if r["runs_on"] == "cpu"}
    versions = [check_op_version(name, v, name in cpu_ops, runtime) for name, v in g.op_codes]
    params = g.constant_bytes()
    tpu_params = g.constant_bytes([op for op, r in zip(g.ops, rows) if r["runs_on"] == "edgetpu"])
    mapped = sum(1 for r in rows if r["runs_on"] == "edgetpu")
    rt = EDGETPU_RUNTIMES[runtime]
    return {
        "ops_total": len(rows),
        "ops_on_edgetpu": mapped,
        "first_cpu_op": None if first_cpu is None else rows[first_cpu],
        "parameter_bytes": params,
        "parameter_cache_bytes": PARAM_CACHE_BYTES,
        "fits_parameter_cache": tpu_params * COMPILED_GROWTH[1] <= USABLE_CACHE_BYTES,
        "memory": predict_memory(tpu_params),
        "edgetpu_runtime": runtime,
        "runtime": {"version": runtime, "libedgetpu": rt["libedgetpu"],
                    "host_tflite": rt["host_tflite"], "source": rt["source"]},
        "compiler16_parses": all(v["compiler16"] != "rejected" for v in versions),
        "op_versions": versions,
        "ops": rows,
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def format_report(rep: dict) -> str:
    lines = [f"EdgeTPU compatibility: {rep['ops_on_edgetpu']}/{rep['ops_total']} ops map to "
             "the Edge TPU"]
    if rep["first_cpu_op"]:
        f = rep["first_cpu_op"]
        lines.append(f"graph is cut at op #{f['index']} {f['op']}: {f['reason']}; it and every "
                     "later op run on the CPU")
    rt = rep["runtime"]
    lines.append(f"Edge TPU runtime {rep['edgetpu_runtime']} (edgetpu_compiler -m "
                 f"{rep['edgetpu_runtime']}): needs libedgetpu {rt['libedgetpu']} or newer")
    bad = [v for v in rep["op_versions"] if v["compiler16"] == "rejected" or v["runtime"] == "rejected"]
    unsure = [v for v in rep["op_versions"] if v["compiler16"] == "unverified"]
    if bad:
        for v in bad:
            lines.append(f"op version: {v['note']}")
    else:
        lines.append("op versions: every op version is one edgetpu_compiler 16 parses "
                     f"(TFLite {COMPILER16_TFLITE} op table)" + (
                         f"; {len(unsure)} newer than that, unverified" if unsure else ""))
    for v in unsure:
        lines.append(f"  unverified: {v['note']}")
    m = rep["memory"]
    lines.append(
        f"parameters on the Edge TPU {_mib(m['parameter_bytes'])}: predicted on-chip "
        f"{_mib(m['on_chip_bytes'])}, off-chip {_mib(m['off_chip_bytes'])} (streamed from the host "
        f"every inference; {_mib(m['off_chip_bytes_range'][0])}-{_mib(m['off_chip_bytes_range'][1])} "
        "with the compiled layout); " + m["margin"])
    comp = rep.get("compiler_log")
    if comp:
        lines += format_compiler_summary(comp)
    counts: dict[tuple[str, str], int] = {}
    for r in rep["ops"]:
        counts[(r["op"], r["runs_on"])] = counts.get((r["op"], r["runs_on"]), 0) + 1
    for (op, where), n in sorted(counts.items()):
        lim = SUPPORTED.get(op, "unsupported")
        lines.append(f"  {op:<20} x{n:<4} {where:<8} {lim}")
    return "\n".join(lines) + "\n"


def format_compiler_summary(comp: dict) -> list[str]:
    head = f"edgetpu_compiler {comp.get('compiler_version') or '?'}: "
    if not comp["succeeded"]:
        return [head + f"failed: {comp.get('error') or 'see the log'}"]
    out = []
    for m in comp["models"]:
        out.append(head + f"{m.get('ops_on_edgetpu', '?')}/{m.get('ops_total', '?')} ops on the "
                   f"Edge TPU in {m.get('subgraphs', '?')} subgraph(s); on-chip "
                   f"{_mib(m.get('on_chip_bytes') or 0)} (of {_mib(m.get('cache_offered_bytes') or 0)}"
                   f" offered), off-chip {_mib(m.get('off_chip_bytes') or 0)}")
    return out


# --------------------------------------------------------------------------- compiler log

_UNIT = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1024, "MB": 1024**2}
_SIZE = r"([0-9.]+)\s*(B|KiB|MiB|GiB|KB|MB)"
_FIELDS = {
    "Input size": "input_bytes", "Output size": "output_bytes",
    "On-chip memory used for caching model parameters": "on_chip_bytes",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining_bytes",
    "Off-chip memory used for streaming uncached model parameters": "off_chip_bytes",
}
_COUNTS = {"Number of Edge TPU subgraphs": "subgraphs", "Total number of operations": "ops_total",
           "Number of operations that will run on Edge TPU": "ops_on_edgetpu",
           "Number of operations that will run on CPU": "ops_on_cpu"}


def _bytes(value: str, unit: str) -> int:
    return int(round(float(value) * _UNIT[unit]))


def parse_compiler_log(text: str) -> dict:
    """edgetpu_compiler's output -> compiler version, success, and per model: sizes, on-chip
    and off-chip parameter bytes, subgraphs, op counts and the operator table (``-s``)."""
    out: dict = {"compiler_version": None, "succeeded": False, "error": None,
                 "unsupported_op_version": None, "models": []}
    cur: dict | None = None
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"Edge TPU Compiler version (\S+)", line)
        if m:
            out["compiler_version"] = m.group(1)
            continue
        m = re.search(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'", line)
        if m:
            out["unsupported_op_version"] = {"op": m.group(1), "version": int(m.group(2))}
            out["error"] = out["error"] or line.removeprefix("ERROR: ").split(". An older")[0]
            continue
        if re.match(r"Models? compiled successfully", line):
            out["succeeded"] = True
            continue
        if line.startswith("Compilation failed") or line in ("Model could not be parsed",
                                                            "Internal compiler error. Aborting!"):
            out["succeeded"] = False
            if out["error"] is None or line.startswith("Compilation failed:"):
                out["error"] = line.removeprefix("Compilation failed: ")
            continue
        if line.startswith(("Input model:", "Input:")):  # the summary, or an operation log
            cur = {"input_model": line.split(":", 1)[1].strip(), "operators": []}
            out["models"].append(cur)
            in_table = False
            continue
        if cur is None:
            continue
        key, _, value = line.partition(":")
        if key in _FIELDS:
            m = re.match(_SIZE, value.strip())
            if m:
                cur[_FIELDS[key]] = _bytes(*m.groups())
        elif key in _COUNTS and value.strip().isdigit():
            cur[_COUNTS[key]] = int(value)
        elif key == "Output model":
            cur["output_model"] = value.strip()
        elif line.startswith("Operator") and "Status" in line:
            in_table = True
        elif in_table:
            m = re.match(r"([A-Z0-9_]+)\s+(\d+)\s+(.+)$", line)
            if m:
                cur["operators"].append({"op": m.group(1), "count": int(m.group(2)),
                                         "status": m.group(3).strip()})
    # The compiler prints "not all operations are supported" (and the CPU/Edge TPU counts) only
    # when some op is left to the CPU; silence means all mapped, if the log got that far.
    complete = bool(re.search(r"^\s*(Operator\s+Count\s+Status|See the operation log file|"
                              r"Compilation succeeded!)", text, re.M))
    for mod in out["models"]:
        if "on_chip_bytes" in mod and "on_chip_remaining_bytes" in mod:
            mod["cache_offered_bytes"] = mod["on_chip_bytes"] + mod["on_chip_remaining_bytes"]
        if "ops_on_edgetpu" not in mod and "ops_total" in mod:
            if complete and "not all operations" not in text:
                mod["ops_on_edgetpu"] = mod["ops_total"]
    if out["unsupported_op_version"] is not None:
        out["succeeded"] = False
    return out


# --------------------------------------------------------------------------- compiler


def compile_model(int8_path: Path, folder: Path, runtime: int = DEFAULT_RUNTIME) -> dict:
    """Run edgetpu_compiler when it is installed; never installs anything itself."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return {"compiled": False, "message": INSTALL_HINT, "edgetpu_runtime": runtime}
    cmd = [exe, "--show_operations", "-m", str(runtime), "-o", str(folder), str(int8_path)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        text = r.stdout + r.stderr
        code = r.returncode
    except subprocess.TimeoutExpired as e:
        text = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                else (e.stdout or "")) + "\nedgeeff: edgetpu_compiler did not finish in 600 s\n"
        code = -1
    write_text_atomic(folder / A.EDGETPU_LOG, text)
    out = folder / A.compiled_name(int8_path.name)
    parsed = parse_compiler_log(text)
    return {"compiled": code == 0 and out.is_file(), "returncode": code,
            "command": f"edgetpu_compiler --show_operations -m {runtime} {int8_path.name}",
            "edgetpu_runtime": runtime, "output": out.name if out.is_file() else None,
            "log": A.EDGETPU_LOG, "parsed": parsed}


def export(tmp: Path, int8_model: Path, runtime: int | None, log) -> dict:
    """The report (txt + json), the compiler run on ``int8_model`` (the converter's graph,
    whose first op the Edge TPU can map) into ``tmp`` and its parsed log; the model card's
    entry."""
    runtime = check_runtime(runtime)
    rep = compatibility(Path(int8_model).read_bytes(), runtime)
    if not rep["compiler16_parses"]:
        log("EdgeTPU: edgetpu_compiler 16 will reject this model: " + "; ".join(
            v["note"] for v in rep["op_versions"] if v["compiler16"] == "rejected"))
    comp = compile_model(Path(int8_model), tmp, runtime)
    if "parsed" in comp:
        rep["compiler_log"] = comp["parsed"]
    text = format_report(rep)
    write_text_atomic(tmp / A.EDGETPU_REPORT_TXT, text)
    write_json_atomic(tmp / A.EDGETPU_REPORT_JSON, rep)
    log(text.rstrip())
    if not comp["compiled"]:
        log(comp.get("message") or f"edgetpu_compiler failed (see {comp.get('log')})")
    card = {k: v for k, v in rep.items() if k not in ("ops", "op_versions", "compiler_log")}
    return card | {"compiler": {k: v for k, v in comp.items() if k != "parsed"}}

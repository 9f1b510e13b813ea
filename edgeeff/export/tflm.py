"""TensorFlow Lite for Microcontrollers: C sources, the op resolver, a measured arena size, and
a minimal firmware project around them (``main.cc``, Makefile, CMakeLists.txt, board README).

The project's test input is one calibration image fed exactly as edgeeff's runtime feeds the
model; its expected output comes from the TFLite interpreter's reference kernels, which
TFLite Micro's reference and CMSIS-NN kernels match bit for bit (the optimized TFLite CPU
kernels may differ by one quantum, so they are recorded but not used as the reference).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core.cost import TFLM_ARENA_MARGIN_PCT, cost, tflm_reserved_arena
from edgeeff.core.data import package_data
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import write_bytes_atomic, write_text_atomic
from edgeeff.core.graph import Graph
from edgeeff.core.optional import MissingExtra
from edgeeff.device.runtime import Classifier
from edgeeff.export import tflm_probe
from edgeeff.export.tflmreport import TFLMReport, TFLMTestInput
from edgeeff.export.tflmreport import write as write_report
from edgeeff.model.calibrate import load_calibration
from edgeeff.tflite import reader
from edgeeff.tflite.rewrite import strip

# TFLite builtin -> MicroMutableOpResolver method (tflite-micro's micro_mutable_op_resolver.h)
RESOLVER = {
    "ADD": "AddAdd", "AVERAGE_POOL_2D": "AddAveragePool2D", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize", "FULLY_CONNECTED": "AddFullyConnected",
    "HARD_SWISH": "AddHardSwish", "LOGISTIC": "AddLogistic", "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean", "MUL": "AddMul", "PAD": "AddPad", "QUANTIZE": "AddQuantize",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape", "SOFTMAX": "AddSoftmax",
    "SUB": "AddSub", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose", "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice", "SUM": "AddSum", "SHAPE": "AddShape", "PACK": "AddPack",
}
# TFLite builtin -> the kernel source stem under tensorflow/lite/micro/kernels/ that defines
# its Register_ function (kernels/cmsis_nn/<stem>.cc replaces it in a CMSIS-NN tree; a
# <stem>_common.cc beside it is compiled too)
KERNEL_STEM = {
    "ADD": "add", "AVERAGE_POOL_2D": "pooling", "CONCATENATION": "concatenation",
    "CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise_conv", "DEQUANTIZE": "dequantize",
    "FULLY_CONNECTED": "fully_connected", "HARD_SWISH": "hard_swish", "LOGISTIC": "logistic",
    "MAX_POOL_2D": "pooling", "MEAN": "reduce", "MUL": "mul", "PAD": "pad",
    "QUANTIZE": "quantize", "RELU": "activations", "RELU6": "activations", "RESHAPE": "reshape",
    "SOFTMAX": "softmax", "SUB": "sub", "TANH": "tanh", "TRANSPOSE": "transpose",
    "SQUEEZE": "squeeze", "STRIDED_SLICE": "strided_slice", "SUM": "reduce", "SHAPE": "shape",
    "PACK": "pack",
}
KERNEL_SUPPORT = ("kernel_util", "micro_tensor_utils")  # used by every kernel
# ops whose kernels have an int8-only registration (Register_<OP>_INT8: CMSIS-NN's int8 path
# without the float and int16 code; an alias of the generic one in other trees)
INT8_REGISTRATION = {"ADD", "AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D",
                     "FULLY_CONNECTED", "MAX_POOL_2D", "MUL", "PAD", "SOFTMAX", "TRANSPOSE"}
# framework sources under tensorflow/ that a firmware does not need (tests, recording)
FRAMEWORK_EXCLUDE = ("test_helpers.cc", "test_helper_custom_ops.cc", "mock_micro_graph.cc",
                     "fake_micro_context.cc", "recording_micro_allocator.cc",
                     "recording_single_arena_buffer_allocator.cc")
ARENA_MARGIN = TFLM_ARENA_MARGIN_PCT / 100  # edgeeff.core.cost's, the one margin
PROBE_TIMEOUT_S = 600
MEASURED_WITH = "tflite-micro Python interpreter (bisection on arena_size)"
ESTIMATED_WITH = ("estimate (edgeeff.core.cost tflm_arena_bytes: activations + TFLM structs; "
                  "tflite-micro is not installed here, it has wheels for x86-64 Linux only)")
EXPECTED_WITH = "TFLite interpreter, reference kernels (BUILTIN_REF)"
MICRO_EXPECTED_WITH = ("tflite-micro Python interpreter (TFLite's reference kernels aborted on "
                       "this model)")
OPTIMIZED_EXPECTED_WITH = ("TFLite interpreter, default optimized kernels (its reference kernels "
                           "failed; TFLM may differ by one quantum)")
PROJECT_FILES = A.TFLM_PROJECT_FILES


def tflite_micro_available() -> bool:
    """Whether tflite-micro's Python interpreter can measure the arena on this machine."""
    try:
        return importlib.util.find_spec("tflite_micro") is not None
    except (ImportError, ValueError):
        return False


def _ops(g: Graph) -> list[str]:
    names = g.op_kinds
    missing = [n for n in names if n not in RESOLVER]
    if missing:
        raise EdgeeffError(f"TFLite Micro has no kernel for op(s): {', '.join(missing)}")
    return names


def resolver_methods(g: Graph) -> list[str]:
    """The exact registrations the graph needs; EdgeeffError naming any op TFLM lacks."""
    return [RESOLVER[n] for n in _ops(g)]


def kernel_stems(ops: list[str]) -> list[str]:
    """The kernel source stems a firmware compiles for these ops (see KERNEL_STEM)."""
    stems = dict.fromkeys(KERNEL_SUPPORT)
    stems.update(dict.fromkeys(KERNEL_STEM[o] for o in ops))
    return list(stems)


def int8_only_ops(g: Graph) -> set[str]:
    """Ops in INT8_REGISTRATION whose every instance reads and writes int8 tensors."""
    ok: dict[str, bool] = {}
    for op in g.ops:
        if op.kind not in INT8_REGISTRATION:
            continue
        io = [g.tensors[i] for i in (op.all_inputs[:1] + op.all_outputs) if i >= 0]
        ok[op.kind] = ok.get(op.kind, True) and all(t.dtype == "int8" for t in io)
    return {name for name, good in ok.items() if good}


def measure_arena(model_path: Path, invoke_input: Path | None = None) -> dict:
    """Smallest allocating arena (and optionally one invocation), in a subprocess."""
    cmd = [sys.executable, "-m", "edgeeff.export.tflm_probe", str(model_path)]
    if invoke_input is not None:
        cmd += ["--invoke", str(invoke_input)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EdgeeffError(f"TFLite Micro probe timed out after {PROBE_TIMEOUT_S}s") from None
    if r.returncode == tflm_probe.NO_TFLITE_MICRO:  # the probe's import, in its process
        raise MissingExtra("tflite_micro", "measuring the TFLite Micro arena")
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise EdgeeffError(f"TFLite Micro could not load the model: {last}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a, the output hash ``main.cc`` prints."""
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def recommended_arena(arena: int) -> int:
    """The exported kTensorArenaSize for a minimum of ``arena`` bytes: the core's
    :func:`~edgeeff.core.cost.tflm_reserved_arena`, the figure ``fit`` budgets."""
    return tflm_reserved_arena(arena)


def _c_array(data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 16):
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in data[i:i + 16]) + ",")
    return "\n".join(lines)


def _registration(op: str, int8_ops: set[str]) -> str:
    if op in int8_ops:
        return f"tflite::Register_{op}_INT8()"
    return ""


def write_sources(model: bytes, folder: Path, name: str, arena: int, methods: list[str],
                  note: str, arena_note: str | None = None,
                  int8_ops: set[str] = frozenset(), reserved: int | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    recommended = reserved if reserved is not None else recommended_arena(arena)
    arena_note = arena_note or (f"Smallest arena that allocated in tflite-micro's interpreter on "
                                f"the build host: {arena} bytes.")
    ops = {RESOLVER[o]: o for o in RESOLVER}
    lines = "".join(f"  if (resolver.{m}({_registration(ops[m], int8_ops)}) != kTfLiteOk) "
                    "return kTfLiteError;\n" for m in methods)
    header = f"""// Generated by edgeeff for {name}. {note}
#ifndef EDGEEFF_MODEL_DATA_H_
#define EDGEEFF_MODEL_DATA_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

extern const unsigned char g_model_data[];
extern const unsigned int g_model_data_len;

// {arena_note}
// Reserved: that (or edgeeff's estimate, whichever is larger) plus {TFLM_ARENA_MARGIN_PCT} %, rounded
// up to 1 KB: the arena 'edgeeff fit' budgets. A 32-bit MCU needs a little less than the 64-bit
// build host (smaller pointers in TFLite Micro's structs).
constexpr int kTensorArenaSize = {recommended};

using EdgeeffOpResolver = tflite::MicroMutableOpResolver<{len(methods)}>;

// Registers exactly the {len(methods)} kernels this graph uses (the int8-only variants where
// every instance of an op is int8: smaller code with CMSIS-NN, the same kernel elsewhere).
inline TfLiteStatus RegisterEdgeeffOps(EdgeeffOpResolver& resolver) {{
""" + lines + """  return kTfLiteOk;
}

#endif  // EDGEEFF_MODEL_DATA_H_
"""
    source = f"""// Generated by edgeeff for {name}: the .tflite flatbuffer as a 16-byte aligned array.
#include "model_data.h"

alignas(16) const unsigned char g_model_data[] = {{
{_c_array(model)}
}};
const unsigned int g_model_data_len = {len(model)};
"""
    h, cc = folder / A.TFLM_MODEL_DATA_H, folder / A.TFLM_MODEL_DATA_CC
    write_text_atomic(h, header)
    write_text_atomic(cc, source)
    return [h, cc]


# --------------------------------------------------------------------------- test input
def _probe(args: list[str]) -> dict | None:
    """One tflm_probe subprocess; None when it fails (a runtime may abort on a kernel)."""
    try:
        r = subprocess.run([sys.executable, "-m", "edgeeff.export.tflm_probe", *args],
                           capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0 or not r.stdout.strip():
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_test_input(model_path: Path, model: bytes, g: Graph, calib: str | None,
                    preprocessor) -> dict:
    """One calibration image as edgeeff's runtime feeds ``model_path`` (its Classifier's
    preprocessing, bound to the input tensor's type and quantisation), and the output of
    ``model`` (read as ``g``) on it: ``{"input", "output", "optimized_output", "image"}``
    (arrays as numpy; an output is None where that TFLite run failed: each runs in a
    subprocess, as a kernel can abort)."""
    clf = Classifier(model_path)
    cal = load_calibration(calib, preprocessor.with_resolution(clf.resolution), 1,
                           holdout=False)
    x = np.zeros((1, clf.resolution, clf.resolution, 3), clf.input_dtype)
    clf.preprocessor.to_input(cal.images[0], x[0], clf.preprocessor.lut())
    outs = {}
    with tempfile.TemporaryDirectory(prefix="edgeeff-tflm-") as work:
        m, xp = Path(work) / A.TFLM_MODEL, Path(work) / "input.npy"
        write_bytes_atomic(m, model)
        np.save(xp, x)
        for kind in ("ref", "auto"):
            rec = _probe([str(m), "--tflite", kind, str(xp)])
            outs[kind] = None if rec is None else np.array(rec["output"], _out_dtype(g))
    return {"input": x, "output": outs["ref"], "optimized_output": outs["auto"],
            "image": f"{cal.source.rstrip('/')}/{cal.files[0]}"}


def _out_dtype(g: Graph) -> np.dtype:
    return np.dtype(g.tensors[g.outputs[0]].dtype)


def write_test_input(folder: Path, name: str, t: dict) -> Path:
    """``test_input.h``: the test input and its expected output, for ``main.cc``."""
    x, y = t["input"], t["output"]
    out = y.tobytes()
    top = int(np.argmax(y.ravel()))
    text = f"""// Generated by edgeeff for {name}: one calibration image ({t['image']}) as
// edgeeff's runtime feeds the model ({x.dtype.name}, shape {list(x.shape)}), and the output the
// .tflite model gives on it ({t['expected_with']}). Included by main.cc only.
#ifndef EDGEEFF_TEST_INPUT_H_
#define EDGEEFF_TEST_INPUT_H_

constexpr unsigned int kTestInputLen = {x.nbytes};
alignas(16) const unsigned char g_test_input[kTestInputLen] = {{
{_c_array(x.tobytes())}
}};

// {y.dtype.name} output tensor bytes ({y.size} values)
constexpr unsigned int kExpectedOutputLen = {len(out)};
const unsigned char g_expected_output[kExpectedOutputLen] = {{
{_c_array(out)}
}};
constexpr int kExpectedTopClass = {top};
constexpr unsigned long kExpectedOutputHash = 0x{fnv1a(out):08x}ul;

#endif  // EDGEEFF_TEST_INPUT_H_
"""
    path = folder / A.TFLM_TEST_INPUT
    write_text_atomic(path, text)
    return path


# --------------------------------------------------------------------------- project
def _template(rel: str) -> str:
    return package_data("edgeeff.export", A.TFLM_PROJECT_TEMPLATE, rel).read_text("utf-8")


def write_project(folder: Path, name: str, stems: list[str], arena: int) -> list[Path]:
    """The firmware project around the sources: main.cc, Makefile, CMakeLists.txt, README.md
    and the QEMU mps2 board files (startup code and linker script template)."""
    subst = {"@NAME@": name, "@KERNELS@": " ".join(stems),
             "@EXCLUDE@": " ".join(FRAMEWORK_EXCLUDE), "@ARENA@": str(arena)}
    written = []
    for rel in PROJECT_FILES:
        text = _template(rel + A.TEMPLATE_SUFFIX if rel in A.TFLM_TEMPLATES else rel)
        for k, v in subst.items():
            text = text.replace(k, v)
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        written.append(path)
    return written


def export(model_path: Path, folder: Path, name: str, spec=None, log=None,
           io: str = "uint8", calib: str | None = None, preprocessor=None) -> TFLMReport:
    """C sources and the firmware project for ``model_path`` (without edgeeff's JSON metadata:
    flash is scarce), and their report (:class:`~edgeeff.export.tflmreport.TFLMReport`,
    written to ``arena.json``).

    The arena is measured with tflite-micro where it is installed; elsewhere (it has wheels
    for x86-64 Linux only) it is edgeeff's estimate for ``spec`` with ``io`` input and output,
    said in one log line and in ``arena.json``'s ``measured_with``. ``calib`` (a folder, None
    for the bundled photos) and ``preprocessor`` give the project's test image.
    """
    model = strip(reader.read_model_file(model_path))  # verified before strip parses it
    g = reader.read(model)  # the one parse of what ships
    ops = _ops(g)
    methods = [RESOLVER[n] for n in ops]
    measured = tflite_micro_available()
    if not measured and spec is None:
        raise EdgeeffError("tflite-micro is not installed (it has wheels for x86-64 Linux only) "
                           "and an imported model has no spec to estimate its arena from: "
                           "export --format tflm on an x86-64 Linux machine")
    write_bytes_atomic(folder / A.TFLM_MODEL, model)
    t = None
    if preprocessor is not None:
        t = make_test_input(model_path, model, g, calib, preprocessor)
    probe = None
    if measured:
        with tempfile.TemporaryDirectory(prefix="edgeeff-tflm-") as work:
            x_path = None
            if t is not None:
                x_path = Path(work) / "input.npy"
                np.save(x_path, t["input"])
            probe = measure_arena(folder / A.TFLM_MODEL)
            if x_path is not None:  # its own process: the invocation can abort on a model
                run = _probe([str(folder / A.TFLM_MODEL), "--invoke", str(x_path),
                              "--arena", str(probe["min_arena_bytes"])])
                if run is not None and "output" in run:
                    probe["output"] = run["output"]
        arena = int(probe["min_arena_bytes"])
        arena_note = None
        estimate = None if spec is None else int(cost(spec, io).tflm_arena_bytes)
    else:
        arena = estimate = int(cost(spec, io).tflm_arena_bytes)
        arena_note = (f"Estimated arena (edgeeff's cost model; tflite-micro is not installed on the "
                      f"build host): {arena} bytes.")
        if log is not None:
            log(f"TFLite Micro: tflite-micro is not installed (wheels for x86-64 Linux only), so "
                f"kTensorArenaSize uses edgeeff's arena estimate ({arena:,} B) instead of a "
                "measurement; re-export on x86-64 Linux to measure it")
    # the arena 'fit' budgeted (the estimate's reservation), unless the measurement needs more
    reserved = recommended_arena(max(arena, estimate or 0))
    files = write_sources(model, folder, name, arena, methods,
                          "Do not edit; re-run 'edgeeff export --format tflm'.", arena_note,
                          int8_only_ops(g), reserved)
    stems = kernel_stems(ops)
    files_written = [A.TFLM_MODEL] + [f.name for f in files]
    test_input = None
    if t is not None:
        micro = None if probe is None or "output" not in probe else \
            np.array(probe["output"], _out_dtype(g))
        if t["output"] is not None:
            out, how = t["output"], EXPECTED_WITH
        elif micro is not None:
            out, how = micro, MICRO_EXPECTED_WITH
        elif t["optimized_output"] is not None:
            out, how = t["optimized_output"], OPTIMIZED_EXPECTED_WITH
        else:
            raise EdgeeffError("no TFLite interpreter could run the int8 model to give the "
                               "firmware's test input its expected output")
        t["output"] = out
        t["expected_with"] = how
        files.append(write_test_input(folder, name, t))
        test_input = TFLMTestInput(
            image=t["image"], dtype=t["input"].dtype.name, shape=tuple(t["input"].shape),
            expected_output=tuple(out.ravel().tolist()), expected_with=how,
            output_dtype=out.dtype.name, top_class=int(np.argmax(out.ravel())),
            output_hash=f"{fnv1a(out.tobytes()):08x}",
            optimized_kernels_max_diff=None if t["optimized_output"] is None else int(np.abs(
                t["optimized_output"].astype(np.int32) - out.astype(np.int32)).max()),
            tflm_python_equal=None if micro is None else micro.tolist() == out.ravel().tolist())
        files += write_project(folder, name, stems, reserved)
        files_written = [A.TFLM_MODEL] + [f.relative_to(folder).as_posix() for f in files]
    report = TFLMReport(
        min_arena_bytes=arena, estimated_arena_bytes=estimate, arena_margin=ARENA_MARGIN,
        recommended_arena_bytes=reserved, model_bytes=len(model), resolver=tuple(methods),
        kernels=tuple(stems), framework_exclude=tuple(FRAMEWORK_EXCLUDE),
        files=tuple(files_written), measured_with=MEASURED_WITH if measured else ESTIMATED_WITH,
        test_input=test_input)
    write_report(folder, report)
    return report

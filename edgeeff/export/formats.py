"""The export formats: one function per row of ``edgeeff.core.artifacts.FORMATS``.

As in Ultralytics' exporter, :data:`FORMAT_FUNCS` maps each format to one function and one
decorator (:func:`reports`) logs every format's time and the size of what it wrote, or the
time it failed after, the same way.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgeeff.core import artifacts as A
from edgeeff.core.artifacts import FORMATS
from edgeeff.core.fsutil import (
    raise_if_interrupted,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from edgeeff.core.graph import Tensor
from edgeeff.core.units import format_size
from edgeeff.export import edgetpu, gpu, tflm
from edgeeff.export.frontend import Frontend
from edgeeff.export.request import ExportRequest
from edgeeff.model.quiet import captured_output
from edgeeff.tflite import reader
from edgeeff.tflite.metadata import model_metadata
from edgeeff.tflite.rewrite import package

Log = Callable[[str], None]


@dataclass
class Models:
    """The .tflite files to write, metadata packed in."""

    float32: bytes
    int8: bytes | None = None  # the CPU form (XNNPACK-friendly input)
    converter_int8: Path | None = None  # the converter's form, for TFLite Micro and the Edge TPU




def artifact_record(path: Path) -> dict:
    """A written .tflite file as the model card describes it (read back and verified)."""
    data = reader.read_model_file(path)  # verified: ModelFileError if damaged
    g = reader.read(data, path, verified=True)
    return {
        "bytes": len(data),
        "ops": g.op_kinds,
        "input": _tensor_record(g.tensors[g.inputs[0]]),
        "output": _tensor_record(g.tensors[g.outputs[0]]),
        "float_ops": reader.non_integer_ops(g),
    }


def _tensor_record(t: Tensor) -> dict:
    q = t.quant
    return {"shape": list(t.file_shape), "dtype": t.dtype,
            "scale": [] if q is None else [float(s) for s in q.scale],
            "zero_point": [] if q is None else [int(z) for z in q.zero_point]}


@dataclass
class FormatJob:
    """What a format function gets: the temporary out folder it writes into, the model, the
    request, the log and the models to write (``models.converter_int8`` for int8 formats)."""

    tmp: Path
    fe: Frontend
    req: ExportRequest
    log: Log
    models: Models | None = None
    labels: list[str] = field(default_factory=list)


def _bytes_under(tmp: Path, names: Iterable[str]) -> int:
    n = 0
    for name in names:
        p = tmp / name.rstrip("/")
        if p.is_file():
            n += p.stat().st_size
        elif p.is_dir():
            n += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return n


def reports(name: str) -> Callable:
    """Decorate format ``name``'s function: one log line with its time and the size of the
    files it wrote (``FORMATS[name].files``), or with the time it failed after."""
    def deco(fn: Callable[[FormatJob], dict]) -> Callable[[FormatJob], dict]:
        @functools.wraps(fn)
        def wrapper(job: FormatJob) -> dict:
            t0 = time.perf_counter()
            try:
                rec = fn(job)
            except Exception:
                raise_if_interrupted()  # an interrupt is not this format failing
                job.log(f"{name}: failed after {time.perf_counter() - t0:.1f} s")
                raise
            size = _bytes_under(job.tmp, FORMATS[name].files)
            job.log(f"{name}: {time.perf_counter() - t0:.1f} s, {format_size(size)}")
            return rec

        return wrapper

    return deco


@reports("tflite")
def export_tflite(job: FormatJob) -> dict:
    m = job.models
    write_bytes_atomic(job.tmp / A.FLOAT_MODEL, m.float32)
    write_text_atomic(job.tmp / A.LABELS, "\n".join(job.labels) + "\n")
    rec = {A.FLOAT_MODEL: artifact_record(job.tmp / A.FLOAT_MODEL)}
    if m.int8 is not None:
        write_bytes_atomic(job.tmp / A.INT8_MODEL, m.int8)
        rec[A.INT8_MODEL] = artifact_record(job.tmp / A.INT8_MODEL) | {"io": job.req.io}
    return rec


@reports("edgetpu")
def export_edgetpu(job: FormatJob) -> dict:
    return {"edgetpu": edgetpu.export(job.tmp, job.models.converter_int8,
                                      job.req.edgetpu_runtime, job.log)}


@reports("tflm")
def export_tflm(job: FormatJob) -> dict:
    rec = tflm.export(job.models.converter_int8, job.tmp / A.TFLM_DIR, job.fe.name,
                      spec=job.fe.spec, log=job.log, io=job.req.io, calib=job.req.calib,
                      preprocessor=job.fe.preprocessor)
    how = "measured" if rec.measured_with == tflm.MEASURED_WITH else "estimated"
    job.log(f"TFLite Micro: arena {rec.min_arena_bytes:,} B {how}, "
            f"kTensorArenaSize = {rec.recommended_arena_bytes:,} B; ops: "
            f"{', '.join(rec.resolver)}")
    return {"tflm": rec.to_dict()}


@reports("float16")
def export_float16(job: FormatJob) -> dict:
    """model_float16.tflite (the float32 model's metadata and labels) and gpu_report.json: the
    GPU delegate's verdict on it and on the int8 model, one line each in the log."""
    fe = job.fe
    spec = fe.spec.to_dict() if fe.spec is not None else None
    write_bytes_atomic(job.tmp / A.FLOAT16_MODEL, package(
        gpu.convert_float16(fe.model), model_metadata(fe.name, spec, job.labels, fe.preprocessor)))
    rec = {A.FLOAT16_MODEL: artifact_record(job.tmp / A.FLOAT16_MODEL) | {"weights": "float16"}}
    reports_ = {}
    for name in (A.FLOAT16_MODEL, A.INT8_MODEL):
        if (job.tmp / name).is_file():
            r = gpu.gpu_report(job.tmp / name)
            reports_[name] = r.to_dict()
            job.log(f"GPU delegate: {r.summary()}")
            for note in r.notes:
                job.log(f"  note: {note}")
    write_json_atomic(job.tmp / A.GPU_REPORT, reports_)
    rec["gpu_delegate"] = {"report": A.GPU_REPORT,
                           **{k: {"fully_delegated": v["fully_delegated"],
                                  "fallback_ops": len(v["fallback"]),
                                  "partitions": v["partitions"]} for k, v in reports_.items()}}
    return rec


@reports("saved_model")
def export_saved_model(job: FormatJob) -> dict:
    with captured_output():
        if isinstance(job.fe.model, str):  # ONNX import: onnx2tf's SavedModel
            shutil.copytree(job.fe.model, job.tmp / A.SAVED_MODEL_DIR)
        else:
            job.fe.model.export(str(job.tmp / A.SAVED_MODEL_DIR))
    return {"saved_model": {"path": A.SAVED_MODEL_DIR}}


# one function per row of edgeeff.core.artifacts.FORMATS
FORMAT_FUNCS: dict[str, Callable[[FormatJob], dict]] = {
    "tflite": export_tflite,
    "edgetpu": export_edgetpu,
    "tflm": export_tflm,
    "float16": export_float16,
    "saved_model": export_saved_model,
}

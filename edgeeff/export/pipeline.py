"""``edgeeff export`` as a pipeline: one function per step.

    frontend -> float -> calibrate -> quantize -> rewrite -> formats -> card

:func:`run` takes an :class:`~edgeeff.export.request.ExportRequest`, builds (or imports) the
model once, converts it once, calibrates and quantises once, packs the metadata, then hands the
models to each requested format's function (:mod:`edgeeff.export.formats`). Everything is
written into a temporary folder that replaces ``--out`` in one rename at the very end;
:class:`ModelCard` is what the export says about the model (``model_card.json``).
"""

from __future__ import annotations

import platform
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgeeff.core import artifacts as A
from edgeeff.core import cost
from edgeeff.core.arch import ModelSpec
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import atomic_dir, write_bytes_atomic, write_json_atomic
from edgeeff.core.labels import labels_for
from edgeeff.core.preprocess import Preprocessor
from edgeeff.device.runtime import warn_collapsed
from edgeeff.export import onnx, tflite
from edgeeff.export.formats import FORMAT_FUNCS, FormatJob, Models
from edgeeff.export.frontend import Frontend, from_spec
from edgeeff.export.quantreport import QuantReport
from edgeeff.export.request import ExportRequest
from edgeeff.model.calibrate import CalibrationSet, load_calibration
from edgeeff.model.quiet import captured_output
from edgeeff.tflite import reader
from edgeeff.tflite.metadata import model_metadata
from edgeeff.tflite.rewrite import cpu_form, package

Log = Callable[[str], None]


# --------------------------------------------------------------------------- errors


class Int8DropTooLarge(EdgeeffError):
    """The measured float32 -> int8 top-1 drop on the held-back images exceeds
    ``--max-int8-drop``: ``drop`` and ``limit`` in percentage points; ``labelled`` says whether
    it is an accuracy drop (labelled images) or the share of disagreements (no labels)."""

    def __init__(self, drop: float, limit: float, labelled: bool, images: int):
        what = ("top-1 accuracy drop float32 -> int8" if labelled else
                "top-1 disagreement float32 vs int8 (no labels for the held-back images)")
        super().__init__(f"{what} is {drop:g} points on {images} held-back images, more than "
                         f"--max-int8-drop {limit:g}; nothing written")
        self.drop, self.limit, self.labelled, self.images = drop, limit, labelled, images


class NoHeldOutImages(EdgeeffError):
    """``--max-int8-drop`` was given but no images were held back to measure the drop on."""

    def __init__(self):
        super().__init__("--max-int8-drop: no held-back images to measure the drop on "
                         "(use more calibration images)")


# --------------------------------------------------------------------------- the card


@dataclass
class ModelCard:
    """What an export says about its model (``model_card.json``)."""

    name: str
    spec: ModelSpec | None  # None for an imported model
    source: dict  # how the model was obtained (built from a spec, or the ONNX file)
    weights: str
    preprocessing: Preprocessor
    labels: str  # the labels file's name
    cost_estimate: dict | None  # edgeeff's cost model for ``spec``
    artifacts: dict[str, dict]  # file or format name -> what it is
    tools: dict[str, str]  # package -> version
    calibration: dict | None = None  # with int8
    quantization: QuantReport | None = None  # with int8: float32 vs int8 on held-back images

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = None if self.spec is None else self.spec.to_dict()
        d["preprocessing"] = self.preprocessing.to_dict()
        d["quantization"] = None if self.quantization is None else self.quantization.to_dict()
        for k in ("calibration", "quantization"):
            if d[k] is None:
                del d[k]
        return d


def tool_versions() -> dict[str, str]:
    v = {"python": platform.python_version()}
    for pkg in ("edgeeff", "tensorflow", "keras", "ai-edge-litert", "tflite-micro", "onnx2tf",
                "numpy", "opencv-python-headless"):
        try:
            v[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return v


# --------------------------------------------------------------------------- the steps


def frontend(req: ExportRequest, work: Path, log: Log) -> Frontend:
    """Step 1: the model, weights loaded once (built from the spec, imported, or given)."""
    if req.frontend is not None:
        return req.frontend
    if req.onnx is not None:
        return onnx.load(req.onnx, req.calib, req.mean, req.std, work)
    return from_spec(req.spec, req.weights, log, req.crop_fraction)


def to_float(fe: Frontend) -> bytes:
    """Step 2: the float32 flatbuffer (also the quantizer's input)."""
    return tflite.convert_float(fe.model)


def calibrate(req: ExportRequest, fe: Frontend, log: Log) -> CalibrationSet:
    """Step 3: the calibration images (and the held-back ones for the report)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calib = load_calibration(req.calib, fe.preprocessor, req.num_calib or 100,
                                 warn_short=req.num_calib, seed=req.calib_seed)
    for w in caught:
        log(f"warning: {w.message}")
    log(f"calibration: {len(calib.images)} images from {calib.source} "
        f"({calib.classes} class folder(s); +{len(calib.holdout)} held back for the report)")
    return calib


@dataclass
class Quantized:
    model: bytes  # the converter's full-integer flatbuffer
    quantizer: str  # what made it (the model card's quantization.quantizer)


def quantize(req: ExportRequest, fe: Frontend, float_model: bytes, calib: CalibrationSet,
             log: Log, on_sample: Callable[[], None] | None = None) -> Quantized:
    """Step 4: full-integer post-training quantisation of ``float_model``, or, where this
    TensorFlow lacks the internals for that, a second full converter run (said in the log)."""
    why = tflite.shared_quantizer_unavailable()
    if why is None:
        return Quantized(tflite.quantize_float_model(float_model, calib.images, fe.preprocessor,
                                                     on_sample=on_sample, io=req.io),
                         tflite.QUANTIZER)
    log(f"note: int8 through a second full TFLiteConverter run: {why}")
    return Quantized(tflite.convert_int8(fe.model, calib.images, fe.preprocessor,
                                         on_sample=on_sample, io=req.io),
                     f"TFLiteConverter (fallback: {why})")


def rewrite(req: ExportRequest, fe: Frontend, labels: list[str], float_model: bytes,
            q: Quantized | None, calib: CalibrationSet | None, work: Path) -> Models:
    """Step 5: metadata into every model; the int8 one in its CPU form. TFLite Micro and the
    Edge TPU compiler start from the converter's graph (see :mod:`edgeeff.core.cost`), kept in
    ``work``, outside ``--out``."""
    spec = fe.spec.to_dict() if fe.spec is not None else None
    models = Models(package(
        float_model, model_metadata(fe.name, spec, labels, fe.preprocessor)))
    if q is None:
        return models
    md = model_metadata(fe.name, spec, labels, fe.preprocessor,
                        {"calibration": calib.record(files=False)})
    models.int8 = package(cpu_form(q.model), md)
    if req.int8_formats:
        models.converter_int8 = work / "converter" / A.INT8_MODEL
        models.converter_int8.parent.mkdir(exist_ok=True)
        write_bytes_atomic(models.converter_int8, package(q.model, md))
    return models


def check_int8_drop(rep: QuantReport, limit: float | None, log: Log) -> None:
    """--max-int8-drop: raise :class:`Int8DropTooLarge` (inside the temporary folder, so
    nothing reaches --out) when the measured drop is larger than ``limit`` points."""
    if rep.images:
        log(rep.summary())
    if limit is None:
        return
    if not rep.images:
        raise NoHeldOutImages()
    if rep.drop_points > limit:
        raise Int8DropTooLarge(rep.drop_points, limit, rep.labelled, rep.images)


def quantization_report(req: ExportRequest, fe: Frontend, tmp: Path, labels: list[str],
                        calib: CalibrationSet, q: Quantized, log: Log) -> QuantReport:
    """float32 vs int8 on the held-back images (checked against --max-int8-drop), once the
    .tflite files are written and before the slower formats run."""
    log("quantization report (float32 vs int8 on held-back images)...")
    collapsed = reader.collapsed_activations(reader.read((tmp / A.INT8_MODEL).read_bytes()))
    if collapsed:  # said here: the runtime's own line is captured with its chatter below
        warn_collapsed(collapsed, "edgeeff runs it without XNNPACK, which cannot", log)
    truth, note = calib.holdout_labels(labels)
    with captured_output():
        rep = tflite.quant_report(tmp / A.FLOAT_MODEL, tmp / A.INT8_MODEL, calib.holdout,
                                  truth, note)
    rep = replace(rep, quantizer=q.quantizer)
    check_int8_drop(rep, req.max_int8_drop, log)
    if req.debug:
        rep = replace(rep, worst_layers=tflite.debug_report(fe.model, calib.images,
                                                            fe.preprocessor))
    return rep


def model_card(req: ExportRequest, fe: Frontend, calib: CalibrationSet | None,
               artifacts: dict[str, dict], quantization: QuantReport | None) -> ModelCard:
    """Step 7: the model card."""
    return ModelCard(
        name=fe.name, spec=fe.spec, source=fe.source, weights=fe.weights,
        preprocessing=fe.preprocessor, labels=A.LABELS,
        cost_estimate=(dict(cost.cost(fe.spec, req.io).__dict__) if fe.spec is not None
                       else None),
        artifacts=artifacts, tools=tool_versions(),
        calibration=None if calib is None else calib.record(), quantization=quantization)


# --------------------------------------------------------------------------- the pipeline


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=False)


def run(req: ExportRequest, log: Log = print) -> ModelCard:
    """Produce every requested artifact under ``req.out``; returns the model card."""
    req = req.prepared()
    if req.int8_formats and not req.int8:
        log(f"note: {', '.join(req.int8_formats)} needs int8: quantising as if --int8 was given")
    if req.writes_int8 and req.calib_note:
        log(f"note: {req.calib_note}")
    with tempfile.TemporaryDirectory(prefix="edgeeff-onnx2tf-") as work:
        return _run(req, Path(work), log)


def _run(req: ExportRequest, work: Path, log: Log) -> ModelCard:
    fe = frontend(req, work, log)
    labels = labels_for(fe.num_classes, req.labels_file)
    calib = q = None
    with _progress() as prog:
        t = prog.add_task("converting float32", total=1)
        float_model = to_float(fe)
        prog.advance(t)
    if req.writes_int8:
        calib = calibrate(req, fe, log)
        with _progress() as prog:
            t = prog.add_task("calibrating + int8", total=len(calib.images))
            q = quantize(req, fe, float_model, calib, log, on_sample=lambda: prog.advance(t))
    models = rewrite(req, fe, labels, float_model, q, calib, work)
    with atomic_dir(req.out, force=req.force) as tmp:
        job = FormatJob(tmp, fe, req, log, models, labels)
        artifacts = FORMAT_FUNCS["tflite"](job)
        quant = None if q is None else quantization_report(req, fe, tmp, labels, calib, q, log)
        for fmt in req.formats:
            if fmt != "tflite":
                artifacts.update(FORMAT_FUNCS[fmt](job))
        card = model_card(req, fe, calib, artifacts, quant)
        write_json_atomic(tmp / A.MODEL_CARD, card.to_dict())
    return card

"""``edgeeff export``: one function per format, calibration as its own step, metadata everywhere.

``edgeeff.core.artifacts.FORMATS`` is the table of what can be produced and under which file
names; :func:`run` builds the model once, calibrates once, converts once, then hands the
artifacts to each requested format's function (``_FORMAT_FUNCS``). Everything is
written into a temporary folder that replaces ``--out`` in one rename at the very end.
"""

from __future__ import annotations

import platform
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from edgeeff.core import artifacts as A
from edgeeff.core.artifacts import FORMATS
from edgeeff.core.cost import IO_TYPES
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import check_out
from edgeeff.core.preprocess import Preprocessor


class Int8DropTooLarge(EdgeeffError):
    """The measured float32 -> int8 top-1 drop on the held-back images exceeds
    ``--max-int8-drop``: ``drop`` and ``limit`` in percentage points, ``basis`` says whether
    it is top-1 accuracy (labelled images) or top-1 agreement (no labels)."""

    def __init__(self, drop: float, limit: float, basis: str, images: int):
        labelled = basis.startswith("top-1 accuracy")
        what = ("top-1 accuracy drop float32 -> int8" if labelled else
                "top-1 disagreement float32 vs int8 (no labels for the held-back images)")
        super().__init__(f"{what} is {drop:g} points on {images} held-back images, more than "
                         f"--max-int8-drop {limit:g}; nothing written")
        self.drop, self.limit, self.basis, self.images = drop, limit, basis, images


@dataclass
class ExportRequest:
    spec: object = None  # ModelSpec, or None with ``onnx``
    weights: str = "none"
    int8: bool = False
    calib: str | None = None
    num_calib: int | None = None
    formats: list[str] = field(default_factory=lambda: ["tflite"])
    out: Path = Path("edgeeff-out")
    force: bool = False
    debug: bool = False
    labels_file: str | None = None
    onnx: str | None = None  # import this ONNX model instead of building ``spec``
    mean: str | None = None  # ONNX input normalisation, pixel units
    std: str | None = None
    frontend: object = None  # a ready Frontend instead of building ``spec``
    max_int8_drop: float | None = None  # fail when int8 loses more top-1 points than this
    calib_note: str | None = None  # where the default calibration folder came from
    edgetpu_runtime: int | None = None  # edgetpu_compiler -m: oldest Edge TPU runtime to support
    io: str = "uint8"  # int8 model input and output type (core.cost.IO_TYPES)

    @property
    def int8_formats(self) -> list[str]:
        """The requested formats built from the int8 model (edgetpu, tflm)."""
        return [f for f in self.formats if FORMATS[f].needs_int8]

    @property
    def writes_int8(self) -> bool:
        """--int8, or a format that needs the int8 model."""
        return self.int8 or bool(self.int8_formats)

    def check(self) -> ExportRequest:
        """Every check that needs no TensorFlow, so bad input fails before it loads."""
        check_out(self.out, self.force)
        if self.io not in IO_TYPES:
            raise EdgeeffError(f"--io must be one of {', '.join(IO_TYPES)}, got {self.io!r}")
        if self.io != "uint8" and not self.writes_int8:
            raise EdgeeffError("--io sets the int8 model's input and output type: add --int8")
        if self.calib is not None and not Path(self.calib).is_dir():
            raise EdgeeffError(f"calibration folder not found: {self.calib}")
        if self.weights not in ("auto", "none", "imagenet", "inherit") and not Path(self.weights).is_file():
            raise EdgeeffError(f"weights file not found: {self.weights}")
        if self.labels_file is not None and not Path(self.labels_file).is_file():
            raise EdgeeffError(f"labels file not found: {self.labels_file}")
        if self.onnx is not None and not Path(self.onnx).is_file():
            raise EdgeeffError(f"ONNX model not found: {self.onnx}")
        if self.onnx is None and (self.mean is not None or self.std is not None):
            raise EdgeeffError("--mean/--std describe an ONNX model's input: use them with --from")
        if self.spec is None and self.onnx is None and self.frontend is None:
            raise EdgeeffError("nothing to export: give a spec, a preset, --phi or --from")
        if self.max_int8_drop is not None:
            if self.max_int8_drop < 0:
                raise EdgeeffError(f"--max-int8-drop must be >= 0, got {self.max_int8_drop:g}")
            if not self.writes_int8:
                raise EdgeeffError("--max-int8-drop checks the int8 model: add --int8")
        if self.edgetpu_runtime is not None:
            from edgeeff.export.edgetpu import check_runtime

            check_runtime(self.edgetpu_runtime)
            if "edgetpu" not in self.formats:
                raise EdgeeffError("--edgetpu-runtime is for the EdgeTPU compiler: add "
                                   "--format edgetpu")
        return self


def request(*, spec_file=None, preset=None, phi=None, family=None, num_classes=None,
            resolution=None, onnx=None, mean=None, std=None, weights="auto", labels_file=None,
            int8=False, calib=None, num_calib=None, formats="tflite", out="edgeeff-out",
            force=False, debug=False, max_int8_drop=None, edgetpu_runtime=None,
            io="uint8") -> ExportRequest:
    """The export options (as the CLI takes them) -> a checked :class:`ExportRequest`.

    A spec file written by ``edgeeff train`` brings its checkpoint, labels and (for
    calibration, unless ``calib`` is given) its training data folder as defaults.
    """
    from edgeeff.core import specfile

    try:
        fmts = A.parse_formats(formats)
    except ValueError as e:
        raise EdgeeffError(str(e)) from None
    req = ExportRequest(weights=weights, int8=int8, calib=calib, num_calib=num_calib,
                        formats=fmts, out=Path(out), force=force, debug=debug,
                        labels_file=labels_file, onnx=onnx, mean=mean, std=std,
                        max_int8_drop=max_int8_drop, edgetpu_runtime=edgetpu_runtime, io=io)
    if onnx:
        if any(v is not None for v in (spec_file, preset, phi, num_classes, resolution)):
            raise EdgeeffError("--from takes the architecture from the ONNX file: drop "
                               "--spec/--preset/--phi/--num-classes/--resolution")
    else:
        req.spec = specfile.resolve(spec_file, preset, phi, family, num_classes, resolution)
        trained = (specfile.trained_artifacts(spec_file or A.SPEC_FILE)
                   if preset is None and phi is None else None)
        if trained:  # a spec written by 'edgeeff train': its checkpoint and labels by default
            if weights == "auto":
                req.weights = trained["weights"]
            req.labels_file = req.labels_file or trained["labels"]
            if calib is None:
                req.calib, req.calib_note = _trained_data(spec_file or A.SPEC_FILE)
    return req.check()


def _trained_data(spec_path) -> tuple[str | None, str | None]:
    """The training data folder 'edgeeff train' recorded in its spec file, as a calibration
    default: (folder, note), or (None, note) when it is not there any more.

    Recorded relative to the spec file's folder (so a project moved or cloned as a whole
    keeps working from any working directory) or absolute; spec files from before that
    recorded the path as typed, relative to the working directory of 'edgeeff train', which
    is tried last.
    """
    from edgeeff.core import specfile

    spec_path = Path(spec_path)
    rec = (specfile.read(spec_path)[1].get("trained") or {}).get("data")
    if not isinstance(rec, str) or not rec:
        return None, None
    p = Path(rec)
    tries = [p] if p.is_absolute() else [spec_path.parent / p, p]
    for t in tries:
        if t.is_dir():
            return str(t), f"calibrating on the training data recorded in {spec_path.name} ({t.name}/)"
    return None, (f"the training data folder recorded in {spec_path.name} ({rec}) is not "
                  "there: calibrating on the bundled calibration/ photos (pass --calib)")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    v = {"python": platform.python_version()}
    for pkg in ("edgeeff", "tensorflow", "keras", "ai-edge-litert", "tflite-micro", "onnx2tf",
                "numpy", "opencv-python-headless"):
        try:
            v[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return v


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=False)


@dataclass
class Frontend:
    """What the converters need, whether the model was built from a spec or imported."""

    name: str
    num_classes: int
    model: object  # Keras model, or a SavedModel folder, converted to both .tflite files
    preprocessor: Preprocessor  # how pixels reach ``model``
    weights: str
    spec: object = None  # ModelSpec when built by edgeeff
    source: dict = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return self.preprocessor.resolution


def frontend_from_spec(spec, weights: str, log=print) -> Frontend:
    """Build ``spec`` once, load its weights, and derive the int8 graph variant."""
    from edgeeff.model.build import build_model
    from edgeeff.model.weights import RandomWeightsWarning, load_into

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        model = build_model(spec, training_dropout=False)
        desc = load_into(model, spec, weights)
    for w in caught:
        log(f"WARNING: {w.message}")
    pp = Preprocessor.for_spec(spec, normalized=False)
    if Preprocessor.folds_into_input(spec):
        # one affine normalisation: the TFLite models take the normalised image, and the int8
        # one carries it in its uint8 input's quantisation (raw pixels in, no extra ops)
        bare = build_model(spec, include_preprocessing=False, training_dropout=False)
        bare.set_weights(model.get_weights())
        model, pp = bare, Preprocessor.for_spec(spec, normalized=True)
    return Frontend(name=spec.name, num_classes=spec.num_classes, model=model, preprocessor=pp,
                    weights=desc, spec=spec, source={"built_from": "spec"})


def run(req: ExportRequest, log=print) -> dict:
    """Produce every requested artifact under ``req.out``; returns the model card."""
    int8 = req.writes_int8
    if req.int8_formats and not req.int8:
        log(f"note: {', '.join(req.int8_formats)} needs int8: quantising as if --int8 was given")
    if int8 and req.calib_note:
        log(f"note: {req.calib_note}")
    req.check()
    out = Path(req.out)
    with tempfile.TemporaryDirectory(prefix="edgeeff-onnx2tf-") as work:
        return _run(req, out, int8, Path(work), log)


def _run(req: ExportRequest, out: Path, int8: bool, work: Path, log) -> dict:
    from edgeeff.core import cost
    from edgeeff.core.fsutil import atomic_dir, write_bytes_atomic, write_json_atomic, write_text_atomic
    from edgeeff.core.labels import labels_for
    from edgeeff.export import metadata, tflite
    from edgeeff.model import calibrate
    from edgeeff.model.quiet import captured_output

    # 1. the model, weights loaded once
    if req.frontend is not None:
        fe = req.frontend
    elif req.onnx is not None:
        from edgeeff.export import onnx as onnx_import

        fe = onnx_import.load(req.onnx, req.calib, req.mean, req.std, work)
    else:
        fe = frontend_from_spec(req.spec, req.weights, log)
    labels = labels_for(fe.num_classes, req.labels_file)
    spec_dict = fe.spec.to_dict() if fe.spec is not None else None
    # 2. calibration, as its own step
    calib = None
    if int8:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            calib = calibrate.load_calibration(req.calib, fe.preprocessor,
                                               req.num_calib or 100, warn_short=req.num_calib)
        for w in caught:
            log(f"warning: {w.message}")
        log(f"calibration: {len(calib.images)} images from {calib.source} "
            f"({calib.classes} class folder(s); +{len(calib.holdout)} held back for the report)")

    card = {
        "name": fe.name,
        "spec": spec_dict,
        "source": fe.source,
        "weights": fe.weights,
        "preprocessing": fe.preprocessor.to_dict(),
        "labels": A.LABELS,
        "cost_estimate": (dict(cost.cost(fe.spec, req.io).__dict__) if fe.spec is not None
                          else None),
        "artifacts": {},
        "tools": _versions(),
    }
    converter_int8 = None
    with atomic_dir(out, force=req.force) as tmp:
        with _progress() as prog:
            t = prog.add_task("converting float32", total=1)
            float_bytes = tflite.convert_float(fe.model)
            prog.advance(t)
            md = metadata.model_metadata(fe.name, spec_dict, labels, fe.preprocessor)
            write_bytes_atomic(tmp / A.FLOAT_MODEL, metadata.package(float_bytes, md))
            if int8:
                t = prog.add_task("calibrating + int8", total=len(calib.images))
                why = tflite.shared_quantizer_unavailable()
                if why is None:  # the float flatbuffer above is the quantizer's input
                    quantizer = tflite.QUANTIZER
                    int8_bytes = tflite.quantize_float_model(
                        float_bytes, calib.images, fe.preprocessor,
                        on_sample=lambda: prog.advance(t), io=req.io)
                else:  # this TensorFlow lacks those internals: a full second conversion
                    quantizer = f"TFLiteConverter (fallback: {why})"
                    log(f"note: int8 through a second full TFLiteConverter run: {why}")
                    int8_bytes = tflite.convert_int8(fe.model, calib.images, fe.preprocessor,
                                                     on_sample=lambda: prog.advance(t),
                                                     io=req.io)
                md = metadata.model_metadata(fe.name, spec_dict, labels, fe.preprocessor,
                                             {"calibration": calib.record(files=False)})
                # the CPU model (XNNPACK-friendly input); TFLite Micro and the Edge TPU
                # compiler start from the converter's graph (see edgeeff.core.cost)
                write_bytes_atomic(tmp / A.INT8_MODEL,
                                   metadata.package(tflite.cpu_form(int8_bytes), md))
                if req.int8_formats:
                    converter_int8 = work / "converter" / A.INT8_MODEL
                    converter_int8.parent.mkdir(exist_ok=True)
                    write_bytes_atomic(converter_int8, metadata.package(int8_bytes, md))
        write_text_atomic(tmp / A.LABELS, "\n".join(labels) + "\n")
        card["artifacts"][A.FLOAT_MODEL] = _artifact(tmp / A.FLOAT_MODEL)
        if int8:
            card["calibration"] = calib.record()
            card["artifacts"][A.INT8_MODEL] = _artifact(tmp / A.INT8_MODEL) | {"io": req.io}
            log("quantization report (float32 vs int8 on held-back images)...")
            truth, note = calib.holdout_labels(labels)
            with captured_output():
                card["quantization"] = tflite.quant_report(
                    tmp / A.FLOAT_MODEL, tmp / A.INT8_MODEL, calib.holdout, truth, note)
            card["quantization"]["quantizer"] = quantizer
            _check_int8_drop(card["quantization"], req.max_int8_drop, log)
            if req.debug:
                card["quantization"]["worst_layers"] = tflite.debug_report(
                    fe.model, calib.images, fe.preprocessor)
        for fmt in req.formats:
            if fmt != "tflite":
                card["artifacts"].update(_FORMAT_FUNCS[fmt](tmp, fe, log, req, converter_int8))
        write_json_atomic(tmp / A.MODEL_CARD, card)
    return card


def _check_int8_drop(rep: dict, limit: float | None, log) -> None:
    """--max-int8-drop: raise :class:`Int8DropTooLarge` (inside the temporary folder, so
    nothing reaches --out) when the measured drop is larger than ``limit`` points."""
    if "top1_drop_points" in rep:
        basis = rep["drop_basis"]
        head = "int8 top-1 drop" if basis.startswith("top-1 accuracy") else \
            "int8 top-1 disagreement with float32 (no labels)"
        acc = (f" (float32 {rep['float_top1']:.1%}, int8 {rep['int8_top1']:.1%})"
               if "float_top1" in rep else "")
        log(f"{head}: {rep['top1_drop_points']:g} points on {rep['images']} held-back "
            f"images{acc}")
    if limit is None:
        return
    if "top1_drop_points" not in rep:
        raise EdgeeffError("--max-int8-drop: no held-back images to measure the drop on "
                           "(use more calibration images)")
    if rep["top1_drop_points"] > limit:
        raise Int8DropTooLarge(rep["top1_drop_points"], limit, rep["drop_basis"], rep["images"])


def _artifact(path: Path) -> dict:
    from edgeeff.device import tflite_graph

    data = tflite_graph.read_model_file(path)  # verified: ModelFileError if damaged
    g = tflite_graph.read(data, path)
    inp, outp = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    return {
        "bytes": len(data),
        "ops": g.op_names,
        "input": {"shape": list(inp.shape), "dtype": inp.dtype, "scale": list(inp.scale),
                  "zero_point": list(inp.zero_point)},
        "output": {"shape": list(outp.shape), "dtype": outp.dtype, "scale": list(outp.scale),
                   "zero_point": list(outp.zero_point)},
        "float_ops": tflite_graph.non_integer_ops(g),
    }


# Each takes (temporary out folder, frontend, log, request, the converter's int8 model: written
# for the formats that need int8, None for the others)


def _export_edgetpu(tmp: Path, fe: Frontend, log, req, int8: Path) -> dict:
    from edgeeff.export import edgetpu

    return {"edgetpu": edgetpu.export(tmp, int8, req.edgetpu_runtime, log)}


def _export_tflm(tmp: Path, fe: Frontend, log, req, int8: Path) -> dict:
    from edgeeff.export import tflm

    rec = tflm.export(int8, tmp / A.TFLM_DIR, fe.name, spec=fe.spec, log=log, io=req.io)
    how = "measured" if rec["measured_with"] == tflm.MEASURED_WITH else "estimated"
    log(f"TFLite Micro: arena {rec['min_arena_bytes']:,} B {how}, "
        f"kTensorArenaSize = {rec['recommended_arena_bytes']:,} B; ops: {', '.join(rec['resolver'])}")
    return {"tflm": rec}


def _export_saved_model(tmp: Path, fe: Frontend, log, req, int8: Path | None) -> dict:
    import shutil

    from edgeeff.model.quiet import captured_output

    with captured_output():
        if isinstance(fe.model, str):  # ONNX import: onnx2tf's SavedModel
            shutil.copytree(fe.model, tmp / A.SAVED_MODEL_DIR)
        else:
            fe.model.export(str(tmp / A.SAVED_MODEL_DIR))
    return {"saved_model": {"path": A.SAVED_MODEL_DIR}}


_FORMAT_FUNCS = {
    "edgetpu": _export_edgetpu,
    "tflm": _export_tflm,
    "saved_model": _export_saved_model,
}


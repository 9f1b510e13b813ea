"""``edgeeff export``: one function per format, calibration as its own step, metadata everywhere.

FORMATS is the table of what can be produced; :func:`run` builds the model once, calibrates
once, converts once, then hands the artifacts to each requested format's function. Everything is
written into a temporary folder that replaces ``--out`` in one rename at the very end.
"""

from __future__ import annotations

import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from edgeeff.errors import EdgeeffError

# format -> (needs int8, what it produces)
FORMATS = {
    "tflite": (False, "model_float32.tflite, model_int8.tflite (with --int8), labels.txt"),
    "edgetpu": (True, "edgetpu_report.txt/json, model_int8_edgetpu.tflite (with edgetpu_compiler)"),
    "tflm": (True, "tflm/model_data.cc/.h with op resolver and measured arena size"),
    "saved_model": (False, "saved_model/ (TensorFlow SavedModel of the float model)"),
}


def parse_formats(text: str) -> list[str]:
    items = [f.strip() for f in text.split(",") if f.strip()]
    if items == ["all"]:
        return list(FORMATS)
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise EdgeeffError(f"unknown format(s) {', '.join(bad) or text!r} "
                           f"(choose from {', '.join(FORMATS)} or all)")
    if "tflite" not in items:
        items.insert(0, "tflite")  # every other format starts from the TFLite models
    return items


@dataclass
class ExportRequest:
    spec: object
    weights: str = "none"
    int8: bool = False
    calib: str | None = None
    num_calib: int | None = None
    formats: list[str] = field(default_factory=lambda: ["tflite"])
    out: Path = Path("edgeeff-out")
    force: bool = False
    debug: bool = False
    labels_file: str | None = None
    frontend: object = None  # a ready Frontend (ONNX import) instead of building ``spec``


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
    resolution: int
    num_classes: int
    model: object  # Keras model, or a SavedModel folder, converted to both .tflite files
    input: dict  # how pixels reach ``model`` (tflite.normalization_record)
    weights: str
    spec: object = None  # ModelSpec when built by edgeeff
    preprocessing: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)


def frontend_from_spec(spec, weights: str, log=print) -> Frontend:
    """Build ``spec`` once, load its weights, and derive the int8 graph variant."""
    from edgeeff.build import build_model
    from edgeeff.export import tflite
    from edgeeff.specfile import preprocessing
    from edgeeff.weights import RandomWeightsWarning, load_into

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        model = build_model(spec, training_dropout=False)
        desc = load_into(model, spec, weights)
    for w in caught:
        log(f"WARNING: {w.message}")
    inp = tflite.input_record(spec, False)
    if tflite.folds_normalization(spec):
        # one affine normalisation: the TFLite models take the normalised image, and the int8
        # one carries it in its uint8 input's quantisation (raw pixels in, no extra ops)
        bare = build_model(spec, include_preprocessing=False, training_dropout=False)
        bare.set_weights(model.get_weights())
        model, inp = bare, tflite.input_record(spec, True)
    return Frontend(name=spec.name, resolution=spec.resolution, num_classes=spec.num_classes,
                    model=model, input=inp, weights=desc, spec=spec,
                    preprocessing=preprocessing(spec), source={"built_from": "spec"})


def run(req: ExportRequest, log=print) -> dict:
    """Produce every requested artifact under ``req.out``; returns the model card."""
    from edgeeff import calibrate, cost
    from edgeeff.export import metadata, tflite
    from edgeeff.fsutil import atomic_dir, write_bytes_atomic, write_json_atomic, write_text_atomic
    from edgeeff.quiet import captured_output
    from edgeeff.weights import labels_for

    needs_int8 = any(FORMATS[f][0] for f in req.formats)
    int8 = req.int8 or needs_int8
    if needs_int8 and not req.int8:
        log(f"note: {', '.join(f for f in req.formats if FORMATS[f][0])} needs int8: "
            "quantising as if --int8 was given")
    out = Path(req.out)
    if out.exists() and not req.force:
        raise EdgeeffError(f"{out} exists; pass --force to replace it")

    # 1. the model, weights loaded once
    fe = req.frontend or frontend_from_spec(req.spec, req.weights, log)
    labels = labels_for(fe.num_classes, req.labels_file)
    spec_dict = fe.spec.to_dict() if fe.spec is not None else None
    # 2. calibration, as its own step
    calib = None
    if int8:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            calib = calibrate.load_calibration(req.calib, fe.resolution,
                                               req.num_calib or 100, warn_short=req.num_calib)
        for w in caught:
            log(f"warning: {w.message}")
        log(f"calibration: {len(calib.images)} images from {calib.source} "
            f"(+{len(calib.holdout)} held back for the report)")

    card = {
        "name": fe.name,
        "spec": spec_dict,
        "source": fe.source,
        "weights": fe.weights,
        "preprocessing": fe.preprocessing,
        "labels": "labels.txt",
        "cost_estimate": dict(cost.cost(fe.spec).__dict__) if fe.spec is not None else None,
        "artifacts": {},
        "tools": _versions(),
    }
    with atomic_dir(out, force=req.force) as tmp:
        with _progress() as prog:
            t = prog.add_task("converting float32", total=1)
            float_bytes = tflite.convert_float(fe.model)
            prog.advance(t)
            md = metadata.model_metadata(fe.name, spec_dict, fe.resolution, labels, fe.input)
            write_bytes_atomic(tmp / "model_float32.tflite", metadata.package(float_bytes, md))
            if int8:
                t = prog.add_task("calibrating + int8", total=len(calib.images))
                int8_bytes = tflite.quantize_float_model(
                    float_bytes, calib.images, fe.input, on_sample=lambda: prog.advance(t))
                if int8_bytes is None:  # fall back to a full second conversion
                    prog.reset(t)
                    int8_bytes = tflite.convert_int8(fe.model, calib.images, fe.input,
                                                     on_sample=lambda: prog.advance(t))
                md = metadata.model_metadata(fe.name, spec_dict, fe.resolution, labels,
                                             fe.input, {"calibration": calib.record()})
                write_bytes_atomic(tmp / "model_int8.tflite", metadata.package(int8_bytes, md))
        write_text_atomic(tmp / "labels.txt", "\n".join(labels) + "\n")
        card["artifacts"]["model_float32.tflite"] = _artifact(tmp / "model_float32.tflite")
        if int8:
            card["calibration"] = calib.record()
            card["artifacts"]["model_int8.tflite"] = _artifact(tmp / "model_int8.tflite")
            log("quantization report (float32 vs int8 on held-back images)...")
            with captured_output():
                card["quantization"] = tflite.quant_report(
                    tmp / "model_float32.tflite", tmp / "model_int8.tflite", calib.holdout)
            if req.debug:
                card["quantization"]["worst_layers"] = tflite.debug_report(
                    fe.model, calib.images, fe.input)
        for fmt in req.formats:
            if fmt != "tflite":
                card["artifacts"].update(_FORMAT_FUNCS[fmt](tmp, fe, log))
        write_json_atomic(tmp / "model_card.json", card)
    return card


def _artifact(path: Path) -> dict:
    from edgeeff import tflite_graph

    data = path.read_bytes()
    g = tflite_graph.read(data)
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


def _export_edgetpu(tmp: Path, fe: Frontend, log) -> dict:
    from edgeeff.export import edgetpu
    from edgeeff.fsutil import write_json_atomic, write_text_atomic

    int8 = (tmp / "model_int8.tflite").read_bytes()
    rep = edgetpu.compatibility(int8)
    text = edgetpu.format_report(rep)
    write_text_atomic(tmp / "edgetpu_report.txt", text)
    write_json_atomic(tmp / "edgetpu_report.json", rep)
    log(text.rstrip())
    comp = edgetpu.compile_model(tmp / "model_int8.tflite", tmp)
    if not comp["compiled"]:
        log(comp.get("message") or f"edgetpu_compiler failed (see {comp.get('log')})")
    return {"edgetpu": {k: v for k, v in rep.items() if k != "ops"} | {"compiler": comp}}


def _export_tflm(tmp: Path, fe: Frontend, log) -> dict:
    from edgeeff.export import tflm

    rec = tflm.export(tmp / "model_int8.tflite", tmp / "tflm", fe.name)
    log(f"TFLite Micro: arena {rec['min_arena_bytes']:,} B measured, "
        f"kTensorArenaSize = {rec['recommended_arena_bytes']:,} B; ops: {', '.join(rec['resolver'])}")
    return {"tflm": rec}


def _export_saved_model(tmp: Path, fe: Frontend, log) -> dict:
    import shutil

    from edgeeff.quiet import captured_output

    with captured_output():
        if isinstance(fe.model, str):  # ONNX import: onnx2tf's SavedModel
            shutil.copytree(fe.model, tmp / "saved_model")
        else:
            fe.model.export(str(tmp / "saved_model"))
    return {"saved_model": {"path": "saved_model"}}


_FORMAT_FUNCS = {
    "edgetpu": _export_edgetpu,
    "tflm": _export_tflm,
    "saved_model": _export_saved_model,
}


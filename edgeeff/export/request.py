"""The export request: every ``edgeeff export`` option, declared once.

:class:`ExportRequest`'s fields carry their ``click`` metadata (:func:`option`); the CLI
generates its options from them (:func:`click_options`), so a flag, its type, its default and
its help live in one place, and ``edgeeff export`` builds the request directly from what
click parsed. :meth:`ExportRequest.prepared` resolves the model and checks everything that
needs no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import click

from edgeeff.core import artifacts as A
from edgeeff.core import specfile
from edgeeff.core.arch import ModelSpec
from edgeeff.core.artifacts import FORMATS
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import check_out
from edgeeff.core.graph import IO_TYPES
from edgeeff.core.units import FiniteFloat
from edgeeff.core.zoo import WEIGHTS_HELP, WeightsChoice
from edgeeff.export import edgetpu
from edgeeff.export.frontend import Frontend

# --------------------------------------------------------------------------- errors


class ExportOptionError(EdgeeffError):
    """Export options that cannot work (alone or together): ``option`` names the flag."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


class InputNotFound(EdgeeffError):
    """A file or folder an option names is not there: ``option``, ``what`` and ``path``."""

    def __init__(self, option: str, what: str, path: str):
        super().__init__(f"{what} not found: {path}")
        self.option, self.what, self.path = option, what, path


# --------------------------------------------------------------------------- the request


def option(*decls: str, default=None, **click_kw):
    """A dataclass field that is also a click option: ``decls`` and ``click_kw`` as
    ``click.option`` takes them; the field's name is the parameter's name and ``default`` is
    both the field's and the option's default."""
    return field(default=default, metadata={"click": (decls, click_kw)})


def click_options(cls) -> Callable:
    """A decorator adding one click option per :func:`option` field of ``cls``, in field order."""
    def deco(f):
        for fl in reversed(fields(cls)):
            if "click" in fl.metadata:
                decls, kw = fl.metadata["click"]
                f = click.option(*decls, fl.name, default=fl.default, **kw)(f)
        return f

    return deco


class _Formats(click.ParamType):
    """``--format`` text -> a tuple of format names (shown as TEXT in the help)."""

    name = "text"

    def convert(self, value, param, ctx):
        return A.parse_formats(value)


_FAMILY = click.Choice(["efficientnet", "lite"])


@dataclass
class ExportRequest:
    """One export. Every field but the last three is an ``edgeeff export`` option."""

    # the model: one of --spec (default: edgeeff.json), --preset, --phi; or --from
    spec_file: str | None = option("--spec", help=f"Spec file from 'edgeeff fit' (default: "
                                                  f"{A.SPEC_FILE}).")
    preset: str | None = option("--preset", help="b0..b7 or lite0..lite4 instead of a spec file.")
    phi: float | None = option("--phi", type=float, help="Continuous phi instead of a spec file.")
    family: str | None = option("--family", type=_FAMILY)
    num_classes: int | None = option("--num-classes", type=click.IntRange(min=1))
    resolution: int | None = option("--resolution", type=click.IntRange(min=32),
                                    help="Override the input size.")
    onnx: str | None = option("--from", help="Import an ONNX model (through onnx2tf) instead.")
    mean: str | None = option("--mean", help="ONNX input normalisation mean, pixel units (e.g. "
                              "127 or 123.7,116.3,103.5); default: the model takes raw 0..255 "
                              "pixels.")
    std: str | None = option("--std", help="ONNX input normalisation std, pixel units (e.g. 128).")
    weights: str = option(
        "--weights", default="auto", show_default=True,
        help=WEIGHTS_HELP)
    labels_file: str | None = option("--labels", help="labels.txt for a custom number of classes.")
    # quantisation
    int8: bool = option("--int8", default=False, is_flag=True,
                        help="Full-integer post-training quantization.")
    calib: str | None = option("--calib", help="Folder of calibration images (default: bundled "
                                               "calibration/).")
    num_calib: int | None = option("--num-calib", type=click.IntRange(min=1),
                                   help="Calibration images (default 100).")
    calib_seed: int = option("--calib-seed", default=0, type=click.IntRange(min=0),
                             show_default=True,
                             help="Seed of the calibration sampling (which images are drawn "
                                  "and held back); recorded in the model card.")
    # what to write, where
    formats: tuple[str, ...] = option("--format", default=("tflite",), type=_Formats(),
                                      show_default=True,
                                      help=f"Comma list of {', '.join(FORMATS)}, or all.")
    out: Path = option("--out", default=Path("edgeeff-out"), type=click.Path(path_type=Path),
                       metavar="TEXT", show_default=True, help="Output folder.")
    force: bool = option("--force", default=False, is_flag=True,
                         help="Replace an existing --out folder.")
    debug: bool = option("--debug", default=False, is_flag=True,
                         help="Per-layer quantization error (QuantizationDebugger).")
    max_int8_drop: float | None = option(
        "--max-int8-drop", type=FiniteFloat(min=0), metavar="PTS",
        help="Fail (nothing written) when int8 loses more than PTS top-1 points against "
             "float32 on the held-back calibration images (top-1 disagreement when "
             "they carry no labels).")
    edgetpu_runtime: int | None = option(
        "--edgetpu-runtime", type=int, metavar="N",
        help="Oldest Edge TPU runtime the compiled model must load on (edgetpu_compiler "
             "-m N, 10-14; default 14, libedgetpu 16.0). 13 = libedgetpu 15.0.")
    io: str = option(
        "--io", default="uint8", type=click.Choice(IO_TYPES), show_default=True,
        help="int8 model input and output: uint8 (raw pixels in, probabilities out: "
             "MediaPipe and Coral) or int8 (no conversion ops; for your own runtime "
             "code and TFLite Micro). edgeeff demo/eval/bench take both.")
    float16: bool = option(
        "--float16", default=False, is_flag=True,
        help=f"Also write {A.FLOAT16_MODEL} (float16 weights, float32 in and out: the GPU "
             f"delegate's model) and {A.GPU_REPORT}; the same as adding float16 to --format. "
             "Implied by a spec fitted to a device whose profile lists the float16 format.")
    # not options: a ready model instead of one resolved from the options above
    spec: ModelSpec | None = None
    frontend: Frontend | None = None
    calib_note: str | None = None  # where the default calibration folder came from
    crop_fraction: float | None = None  # a trained model's own crop (from its spec file)

    def __post_init__(self):
        self.formats = A.parse_formats(self.formats)
        if self.float16 and "float16" not in self.formats:
            self.formats = (*self.formats, "float16")
        self.out = Path(self.out)

    @property
    def int8_formats(self) -> list[str]:
        """The requested formats built from the int8 model (edgetpu, tflm)."""
        return [f for f in self.formats if FORMATS[f].needs_int8]

    @property
    def weights_choice(self) -> WeightsChoice:
        """``--weights`` parsed (:class:`~edgeeff.core.zoo.WeightsChoice`)."""
        return WeightsChoice.parse(self.weights)

    @property
    def writes_int8(self) -> bool:
        """--int8, or a format that needs the int8 model."""
        return self.int8 or bool(self.int8_formats)

    def prepared(self) -> ExportRequest:
        """The model resolved from --spec/--preset/--phi (a spec file written by ``edgeeff
        train`` bringing its checkpoint, labels and training data folder as defaults), then
        :meth:`check`-ed. A request that already names its model is only checked."""
        if self.onnx is not None:
            if any(v is not None for v in (self.spec_file, self.preset, self.phi,
                                           self.num_classes, self.resolution)):
                raise ExportOptionError("--from", "--from takes the architecture from the ONNX "
                                        "file: drop --spec/--preset/--phi/--num-classes/"
                                        "--resolution")
            return self.check()
        if self.spec is not None or self.frontend is not None:
            return self.check()
        spec, doc = specfile.choose(self.spec_file, self.preset, self.phi, self.family,
                                    self.num_classes, self.resolution)
        changes: dict = {"spec": spec}
        if doc is not None and doc.fit is not None and \
                "float16" in doc.fit.device_profile.get("formats", ()):
            changes["float16"] = True  # a phone's GPU profile: __post_init__ adds the format
        if doc is not None and doc.trained is not None:
            if self.weights_choice.kind == "auto":
                changes["weights"] = doc.trained_weights()
            changes["labels_file"] = self.labels_file or doc.trained_labels()
            changes["crop_fraction"] = doc.trained.crop_fraction
            if self.calib is None:
                changes["calib"], changes["calib_note"] = _training_data(doc)
        return replace(self, **changes).check()

    def check(self) -> ExportRequest:
        """Every check that needs no TensorFlow, so bad input fails before it loads."""
        check_out(self.out, self.force)
        if self.io not in IO_TYPES:
            raise ExportOptionError("--io", f"--io must be one of {', '.join(IO_TYPES)}, "
                                            f"got {self.io!r}")
        if self.io != "uint8" and not self.writes_int8:
            raise ExportOptionError("--io", "--io sets the int8 model's input and output type: "
                                            "add --int8")
        if self.calib is not None and not Path(self.calib).is_dir():
            raise InputNotFound("--calib", "calibration folder", self.calib)
        if self.weights_choice.is_file and not Path(self.weights).is_file():
            raise InputNotFound("--weights", "weights file", self.weights)
        if self.labels_file is not None and not Path(self.labels_file).is_file():
            raise InputNotFound("--labels", "labels file", self.labels_file)
        if self.onnx is not None and not Path(self.onnx).is_file():
            raise InputNotFound("--from", "ONNX model", self.onnx)
        if self.onnx is None and (self.mean is not None or self.std is not None):
            raise ExportOptionError("--mean", "--mean/--std describe an ONNX model's input: use "
                                              "them with --from")
        if self.spec is None and self.onnx is None and self.frontend is None:
            raise ExportOptionError("--spec", "nothing to export: give a spec, a preset, --phi "
                                              "or --from")
        if self.max_int8_drop is not None:
            if self.max_int8_drop < 0:
                raise ExportOptionError("--max-int8-drop", f"--max-int8-drop must be >= 0, got "
                                                           f"{self.max_int8_drop:g}")
            if not self.writes_int8:
                raise ExportOptionError("--max-int8-drop", "--max-int8-drop checks the int8 "
                                                           "model: add --int8")
        if self.edgetpu_runtime is not None:
            edgetpu.check_runtime(self.edgetpu_runtime)
            if "edgetpu" not in self.formats:
                raise ExportOptionError("--edgetpu-runtime", "--edgetpu-runtime is for the "
                                        "EdgeTPU compiler: add --format edgetpu")
        return self


def _training_data(doc: specfile.SpecFile) -> tuple[str | None, str | None]:
    """The training data folder ``edgeeff train`` recorded, as a calibration default:
    (folder, note), or (None, note) when it is not there any more."""
    if doc.trained is None or not doc.trained.data:
        return None, None
    name = doc.path.name if doc.path is not None else A.SPEC_FILE
    found = doc.training_data()
    if found is not None:
        return str(found), f"calibrating on the training data recorded in {name} ({found.name}/)"
    return None, (f"the training data folder recorded in {name} ({doc.trained.data}) is not "
                  "there: calibrating on the bundled calibration/ photos (pass --calib)")

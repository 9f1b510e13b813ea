"""Every file edgeeff writes or reads by name, and the export formats: one table.

In the spirit of Ultralytics' ``export_formats()``: the exporter, the runtime, ``bench``,
``bundle``, ``eval``, ``train``, the CLI and the device profiles' ``formats`` key all read
these names from here, so an artifact is renamed in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgeeff.core.errors import EdgeeffError

# file names inside an export folder
FLOAT_MODEL = "model_float32.tflite"
INT8_MODEL = "model_int8.tflite"
FLOAT16_MODEL = "model_float16.tflite"  # float16 weights, float32 in and out: the GPU delegate's
GPU_REPORT = "gpu_report.json"  # GPU-delegate compatibility per model (edgeeff.core.gpu)
EDGETPU_MODEL = "model_int8_edgetpu.tflite"
LABELS = "labels.txt"
MODEL_CARD = "model_card.json"
EDGETPU_REPORT_TXT = "edgetpu_report.txt"
EDGETPU_REPORT_JSON = "edgetpu_report.json"
EDGETPU_LOG = "edgetpu_compiler.log"
TFLM_DIR = "tflm"
SAVED_MODEL_DIR = "saved_model"
# a spec file (written by fit and train) and a training folder's contents
SPEC_FILE = "edgeeff.json"
TRAINED_WEIGHTS = "model.weights.h5"
TRAINED_KERAS = "model.keras"
TRAIN_HISTORY = "history.json"
# name of the JSON metadata buffer edgeeff embeds in every .tflite it writes
METADATA_NAME = "edgeeff"


@dataclass(frozen=True)
class Format:
    name: str
    files: tuple[str, ...]
    needs_int8: bool
    description: str


# format      files                                          int8   what it is
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("tflite", (FLOAT_MODEL, INT8_MODEL, LABELS, MODEL_CARD), False,
           "float32 and (with --int8) full-integer TFLite models with metadata"),
    Format("edgetpu", (EDGETPU_REPORT_TXT, EDGETPU_REPORT_JSON, EDGETPU_MODEL, EDGETPU_LOG), True,
           "Edge TPU compatibility report; compiled model where edgetpu_compiler is installed"),
    Format("tflm", (TFLM_DIR + "/model_data.cc", TFLM_DIR + "/model_data.h",
                    TFLM_DIR + "/model.tflite", TFLM_DIR + "/arena.json"), True,
           "TFLite Micro C sources with the op resolver and a measured arena size"),
    Format("float16", (FLOAT16_MODEL, GPU_REPORT), False,
           "float16-weight TFLite model for the GPU delegate (phones; also --float16) and the "
           "GPU-delegate report of it and the int8 model"),
    Format("saved_model", (SAVED_MODEL_DIR + "/",), False,
           "TensorFlow SavedModel of the float model"),
)}

# the models a device runs, in order of preference
MODEL_PREFERENCE = {"int8": (INT8_MODEL, FLOAT_MODEL), "float32": (FLOAT_MODEL, INT8_MODEL)}
# the models `bench` times in an export folder, in its table's order
BENCH_MODELS = (FLOAT_MODEL, FLOAT16_MODEL, INT8_MODEL)


class UnknownFormat(EdgeeffError):
    """``--format`` names formats that do not exist: ``unknown`` lists them (empty when
    nothing was named), ``given`` is the text as typed."""

    def __init__(self, unknown: list[str], given: str):
        super().__init__(f"unknown format(s) {', '.join(unknown) or repr(given)} "
                         f"(choose from {', '.join(FORMATS)} or all)")
        self.unknown, self.given = unknown, given


def parse_formats(value: str | Iterable[str]) -> tuple[str, ...]:
    """``--format`` text (or a sequence of names) -> format names, ``tflite`` first (every
    format starts from it). :class:`UnknownFormat` naming the unknown ones."""
    text = value if isinstance(value, str) else ",".join(value)
    items = [f.strip() for f in text.split(",") if f.strip()]
    if items == ["all"]:
        return tuple(FORMATS)
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise UnknownFormat(bad, text)
    if "tflite" not in items:
        items.insert(0, "tflite")
    return tuple(dict.fromkeys(items))

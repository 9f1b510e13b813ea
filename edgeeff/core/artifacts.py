"""Every file edgeeff writes or reads by name, and the export formats: one table.

In the spirit of Ultralytics' ``export_formats()``: the exporter, the runtime, ``bench``,
``bundle``, ``eval``, ``train``, the CLI and the device profiles' ``formats`` key all read
these names from here, so an artifact is renamed in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgeeff.core.errors import EdgeeffError

# suffixes: a TFLite model, a JSON document, and the compiled Edge TPU model's (edgetpu_compiler
# writes <stem>_edgetpu.tflite beside nothing else; see compiled_name)
TFLITE_SUFFIX = ".tflite"
JSON_SUFFIX = ".json"
EDGETPU_SUFFIX = "_edgetpu" + TFLITE_SUFFIX


def compiled_name(model: str) -> str:
    """The file ``edgetpu_compiler`` writes for the model file called ``model``."""
    return model.removesuffix(TFLITE_SUFFIX) + EDGETPU_SUFFIX


# file names inside an export folder
FLOAT_MODEL = "model_float32.tflite"
INT8_MODEL = "model_int8.tflite"
FLOAT16_MODEL = "model_float16.tflite"  # float16 weights, float32 in and out: the GPU delegate's
GPU_REPORT = "gpu_report.json"  # GPU-delegate compatibility per model (edgeeff.core.gpu)
EDGETPU_MODEL = compiled_name(INT8_MODEL)
LABELS = "labels.txt"
MODEL_CARD = "model_card.json"
EDGETPU_REPORT_TXT = "edgetpu_report.txt"
EDGETPU_REPORT_JSON = "edgetpu_report.json"
EDGETPU_LOG = "edgetpu_compiler.log"
TFLM_DIR = "tflm"
SAVED_MODEL_DIR = "saved_model"
# inside TFLM_DIR: the model TFLite Micro runs, its C sources, the arena report and the
# firmware project (written from the templates in edgeeff/export/tflm_project, where the
# Makefile, CMakeLists.txt and README.md end in TEMPLATE_SUFFIX)
TFLM_MODEL = "model.tflite"
TFLM_MODEL_DATA_H = "model_data.h"
TFLM_MODEL_DATA_CC = "model_data.cc"
TFLM_ARENA = "arena.json"
TFLM_TEST_INPUT = "test_input.h"
TFLM_MAIN = "main.cc"
TFLM_MAKEFILE = "Makefile"
TFLM_CMAKE = "CMakeLists.txt"
TFLM_README = "README.md"
TFLM_STARTUP = "boards/mps2/startup.c"  # the QEMU mps2 board's startup code
TFLM_LINKER_SCRIPT = "boards/mps2/link.ld.in"  # its linker script template
TFLM_PROJECT_FILES = (TFLM_MAIN, TFLM_MAKEFILE, TFLM_CMAKE, TFLM_README, TFLM_STARTUP,
                      TFLM_LINKER_SCRIPT)
TFLM_TEMPLATES = (TFLM_MAKEFILE, TFLM_CMAKE, TFLM_README)  # stored as <name>TEMPLATE_SUFFIX
TEMPLATE_SUFFIX = ".in"
TFLM_PROJECT_TEMPLATE = "tflm_project"  # the templates' folder in the edgeeff.export package
# `deploy firmware`'s output folder: the build report, a failed build's log, the linker script
FIRMWARE_REPORT = "firmware.json"
FIRMWARE_BUILD_LOG = "build-error.log"
FIRMWARE_ELF = "firmware.elf"  # cross-compiled; a host build's executable is FIRMWARE_EXE
FIRMWARE_EXE = "firmware"
FIRMWARE_LINKER_SCRIPT = "link.ld"
# a spec file (written by fit and train) and a training folder's contents
SPEC_FILE = "edgeeff.json"
TRAINED_WEIGHTS = "model.weights.h5"
TRAINED_KERAS = "model.keras"
TRAIN_HISTORY = "history.json"
# the resumable state in a training run's state folder: the state file (written last, it
# names a consistent set), the last and best epoch's weights, the optimizer's slots
TRAIN_STATE = "state.json"
TRAIN_LAST_WEIGHTS = "last.weights.h5"
TRAIN_BEST_WEIGHTS = "best.weights.h5"
TRAIN_OPTIMIZER = "optimizer.npz"
TRAIN_HISTORY_PLOT = "history.png"
TEACHER_INFO = "teacher.json"  # a cached teacher's training record (train's distilled recipe)
# `tune`'s output folder
TUNE_REPORT = "tune.json"
TUNE_PLOT = "tune.png"
# `profile`'s device profile
DEVICE_PROFILE = "edgeeff-device.toml"
# `bundle`'s folder: what to do with it
BUNDLE_README = "README.txt"
# package data in edgeeff.data (read through edgeeff.core.data.package_data)
IMAGENET_LABELS = "imagenet_labels.txt"
IMAGENET_WNIDS = "imagenet_wnids.txt"
ACCURACY_TABLE = "accuracy_lite.json"
MCU_CORES = "mcu_cores.json"  # per-core cycles per counted instruction (edgeeff firmware --run)
MCU_OP_COUNTS = "mcu_op_counts.json"  # per-op TFLM instruction counts and their fitted model
# in an installed distribution's .dist-info: how pip got it (PEP 610), read by `bundle`
DIST_DIRECT_URL = "direct_url.json"
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

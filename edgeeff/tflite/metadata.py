"""Metadata written into every artifact, in two forms:

* a JSON buffer named ``edgeeff`` (model name, spec, labels, input normalisation and pixel
  range, calibration record), so a lone .tflite file is enough for ``edgeeff demo``/``eval``/
  ``bench`` on a device (see :class:`edgeeff.device.runtime.Classifier`);
* the standard TFLite metadata, a ``TFLITE_METADATA`` buffer holding the M001 flatbuffer of
  tensorflow_lite_support/metadata/metadata_schema.fbs, which MediaPipe Tasks' ImageClassifier
  and the TFLite Task Library read (labels.txt goes in a zip appended to the model:
  :func:`edgeeff.tflite.rewrite.package`).

No usable package ships generated classes of metadata_schema.fbs: tflite-support pins
protobuf < 4 (not installable beside current TensorFlow), and MediaPipe's wheel has them only
below ``mediapipe/__init__``, which loads MediaPipe's native task libraries and requires
opencv-contrib-python (which replaces opencv-python-headless's ``cv2``). So the few tables
written here are declared once, by field name in schema order (:data:`TABLES`, copied from
metadata_schema.fbs), and built with the flatbuffers runtime; slots follow from that order as
flatc numbers them (a union field takes two: its type, then its value).
"""

from __future__ import annotations

import flatbuffers

from edgeeff import __version__
from edgeeff.core.fsutil import json_text
from edgeeff.core.preprocess import Preprocessor

TFLITE_METADATA = "TFLITE_METADATA"  # the metadata entry MediaPipe and the Task Library look for
FILE_IDENTIFIER = b"M001"
PARSER_VERSION = "1.0.0"  # the oldest metadata parser that reads every field written here

# metadata_schema.fbs, the tables written here: fields in declaration order (-> vtable slots)
TABLES: dict[str, tuple[str, ...]] = {
    "ModelMetadata": ("name", "description", "version", "subgraph_metadata", "author",
                      "license", "associated_files", "min_parser_version"),
    "SubGraphMetadata": ("name", "description", "input_tensor_metadata",
                         "output_tensor_metadata", "associated_files", "input_process_units",
                         "output_process_units", "input_tensor_groups", "output_tensor_groups",
                         "custom_metadata"),
    "TensorMetadata": ("name", "description", "dimension_names", "content", "process_units",
                       "stats", "associated_files"),
    "Content": ("content_properties:union", "range"),
    "ImageProperties": ("color_space", "default_size"),
    "ImageSize": ("width", "height"),
    "FeatureProperties": (),
    "ProcessUnit": ("options:union",),
    "NormalizationOptions": ("mean", "std"),
    "Stats": ("max", "min"),
    "AssociatedFile": ("name", "description", "type", "locale", "version"),
}
# unions: members in declaration order (type code = position + 1; 0 is NONE)
UNIONS: dict[str, tuple[str, ...]] = {
    "content_properties": ("FeatureProperties", "ImageProperties", "BoundingBoxProperties",
                           "AudioProperties"),
    "options": ("NormalizationOptions", "ScoreCalibrationOptions", "ScoreThresholdingOptions",
                "BertTokenizerOptions", "SentencePieceTokenizerOptions",
                "RegexTokenizerOptions"),
}
COLOR_SPACE_RGB = 1  # ColorSpaceType
TENSOR_AXIS_LABELS = 2  # AssociatedFileType: one label per output element


def slots(table: str) -> dict[str, int]:
    """Field name -> vtable slot of ``table``; a union ``f`` gives ``f_type`` and ``f``."""
    out: dict[str, int] = {}
    for field in TABLES[table]:
        name, _, kind = field.partition(":")
        if kind == "union":
            out[name + "_type"] = len(out)
        out[name] = len(out)
    return out


class _Writer:
    """Tables of :data:`TABLES` by field name on one ``flatbuffers.Builder``."""

    def __init__(self):
        self.b = flatbuffers.Builder(1024)

    def floats(self, values) -> int:
        self.b.StartVector(4, len(values), 4)
        for v in reversed(values):
            self.b.PrependFloat32(float(v))
        return self.b.EndVector()

    def tables(self, offsets) -> int:
        self.b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            self.b.PrependUOffsetTRelative(o)
        return self.b.EndVector()

    def table(self, table: str, /, **fields) -> int:
        """A ``table`` table. Values: an offset from this writer, a ``str`` (written as a string),
        ``("u8" | "u32", n)`` for a scalar, ``(member table, offset)`` for a union."""
        where = slots(table)
        values: list[tuple[int, str, int]] = []
        for field, value in fields.items():
            if isinstance(value, str):
                value = self.b.CreateString(value)
            if isinstance(value, tuple) and value[0] in ("u8", "u32"):
                values.append((where[field], value[0], value[1]))
            elif isinstance(value, tuple):  # union
                values.append((where[field + "_type"], "u8", UNIONS[field].index(value[0]) + 1))
                values.append((where[field], "off", value[1]))
            else:
                values.append((where[field], "off", value))
        self.b.StartObject(len(where))
        for slot, kind, value in values:
            if kind == "off":
                self.b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "u8":
                self.b.PrependUint8Slot(slot, value, 0)
            else:
                self.b.PrependUint32Slot(slot, value, 0)
        return self.b.EndObject()

    def finish(self, root: int) -> bytes:
        self.b.Finish(root, file_identifier=FILE_IDENTIFIER)
        return bytes(self.b.Output())


def standard_metadata(name: str, description: str, version: str, resolution: int,
                      mean: list[float], std: list[float], labels_file: str) -> bytes:
    """The M001 flatbuffer of an image classifier: RGB ``resolution``² uint8 input with its
    normalisation (``mean``/``std``), softmax scores out with ``labels_file`` as axis labels."""
    w = _Writer()
    size = w.table("ImageSize", width=("u32", resolution), height=("u32", resolution))
    props = w.table("ImageProperties", color_space=("u8", COLOR_SPACE_RGB), default_size=size)
    norm = w.table("NormalizationOptions", mean=w.floats(mean), std=w.floats(std))
    unit = w.table("ProcessUnit", options=("NormalizationOptions", norm))
    image = w.table(
        "TensorMetadata", name="image",
        description=f"RGB image, {resolution}x{resolution}, pixel values 0..255",
        content=w.table("Content", content_properties=("ImageProperties", props)),
        process_units=w.tables([unit]),
        stats=w.table("Stats", max=w.floats([255.0]), min=w.floats([0.0])))
    labels = w.table("AssociatedFile", name=labels_file, description="Class labels, one per line",
                     type=("u8", TENSOR_AXIS_LABELS))
    scores = w.table(
        "TensorMetadata", name="probability", description="Softmax probability of each class",
        content=w.table("Content",
                        content_properties=("FeatureProperties", w.table("FeatureProperties"))),
        stats=w.table("Stats", max=w.floats([1.0]), min=w.floats([0.0])),
        associated_files=w.tables([labels]))
    sub = w.table("SubGraphMetadata", input_tensor_metadata=w.tables([image]),
                  output_tensor_metadata=w.tables([scores]))
    root = w.table("ModelMetadata", name=name, description=description, version=version,
                   subgraph_metadata=w.tables([sub]), author="edgeeff",
                   min_parser_version=PARSER_VERSION)
    return w.finish(root)


def standard_buffer(meta: dict, labels_file: str) -> bytes:
    """:func:`standard_metadata` for edgeeff's JSON metadata record ``meta``."""
    pp = Preprocessor.from_dict(meta["input"])
    mean, std = (list(pp.mean), list(pp.std)) if pp.normalized else ([0.0], [1.0])
    return standard_metadata(
        meta["name"], f"{meta['name']} image classifier ({len(meta['labels'])} classes), "
        "by edgeeff", __version__, pp.resolution, mean, std, labels_file)


def model_metadata(name: str, spec: dict | None, labels: list[str], pp: Preprocessor,
                   extra: dict | None = None) -> dict:
    """edgeeff's JSON metadata; ``input`` is the model's :class:`Preprocessor` record, which
    the runtime reads back with ``Preprocessor.from_dict``."""
    return {
        "name": name,
        "producer": f"edgeeff {__version__}",
        "spec": spec,
        "input": pp.to_dict(),
        "labels": labels,
        **(extra or {}),
    }


def json_bytes(meta: dict) -> bytes:
    """``meta`` as the compact UTF-8 JSON stored in the ``edgeeff`` metadata buffer."""
    return json_text(meta, "the model's metadata", separators=(",", ":")).encode("utf-8")

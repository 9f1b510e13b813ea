"""Metadata written into every artifact, in two forms:

* a JSON buffer named ``edgeeff`` (model name, spec, labels, input normalisation and pixel
  range, calibration record), so a lone .tflite file is enough for ``edgeeff demo``/``eval``/
  ``bench`` on a device (see runtime.Classifier);
* the standard TFLite metadata (``TFLITE_METADATA`` + labels.txt packed in the file), so
  MediaPipe Tasks' ImageClassifier and the TFLite Task Library load it and report label names.
"""

from __future__ import annotations

import json

from edgeeff.core.artifacts import LABELS, METADATA_NAME
from edgeeff.core.preprocess import Preprocessor
from edgeeff.device import tflite_graph


def fb_utils():
    """(flatbuffer_utils, generated schema) for unpacking and repacking .tflite models."""
    try:
        from ai_edge_litert import schema_py_generated as s
        from ai_edge_litert.tools import flatbuffer_utils as fu
    except ImportError:  # pragma: no cover - TensorFlow-only installs
        from tensorflow.lite.python import schema_py_generated as s
        from tensorflow.lite.tools import flatbuffer_utils as fu
    return fu, s


def _with_buffers(model: bytes, named: dict[str, bytes]) -> bytes:
    """``model`` with one metadata buffer per name (replacing buffers of the same names)."""
    fu, s = fb_utils()
    obj = fu.convert_bytearray_to_object(bytearray(model))

    def name_of(m):
        return m.name.decode() if isinstance(m.name, bytes) else m.name

    obj.metadata = [m for m in (obj.metadata or []) if name_of(m) not in named]
    tflite_graph.append_metadata(obj, named)
    return bytes(fu.convert_object_to_bytearray(obj))


def _json(meta: dict) -> bytes:
    return json.dumps(meta, separators=(",", ":")).encode("utf-8")


def model_metadata(name: str, spec: dict | None, labels: list[str], pp: Preprocessor,
                   extra: dict | None = None) -> dict:
    """edgeeff's JSON metadata; ``input`` is the model's :class:`Preprocessor` record, which
    the runtime reads back with ``Preprocessor.from_dict``."""
    from edgeeff import __version__

    return {
        "name": name,
        "producer": f"edgeeff {__version__}",
        "spec": spec,
        "input": pp.to_dict(),
        "labels": labels,
        **(extra or {}),
    }


def strip(model: bytes) -> bytes:
    """``model`` without edgeeff's JSON metadata (for flash-tight targets such as TFLM)."""
    fu, _ = fb_utils()
    obj = fu.convert_bytearray_to_object(bytearray(model))
    keep = []
    for m in obj.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        if name == METADATA_NAME:
            obj.buffers[m.buffer].data = None  # an empty buffer costs a few bytes
        else:
            keep.append(m)
    if len(keep) == len(obj.metadata or []):
        return model
    obj.metadata = keep
    return bytes(fu.convert_object_to_bytearray(obj))


# --------------------------------------------------------------------------- standard metadata
# The TFLite metadata flatbuffer ("TFLITE_METADATA", file identifier M001, schema
# tensorflow_lite_support/metadata/metadata_schema.fbs) that MediaPipe Tasks and the TFLite
# Task Library read, plus labels.txt as an associated file in a zip appended to the model. The
# schema's Python bindings ship only with tflite-support (no longer installable next to current
# TensorFlow) and MediaPipe's writers lack a native module in the PyPI wheel, so the few tables
# needed are built here with the flatbuffers runtime. Field numbers follow the schema's order.

TFLITE_METADATA = "TFLITE_METADATA"
_IMAGE_PROPERTIES = 2  # ContentProperties union member
_FEATURE_PROPERTIES = 1
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union member
_RGB = 1  # ColorSpaceType
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
PARSER_VERSION = "1.0.0"


def _standard_metadata(name: str, description: str, version: str, resolution: int,
                       mean: list[float], std: list[float], labels_file: str) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def vec_f32(values):
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(float(v))
        return b.EndVector()

    def vec_tables(offsets):
        b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def table(fields: list[tuple[int, str, object]]):
        b.StartObject(max(slot for slot, _, _ in fields) + 1)
        for slot, kind, value in fields:
            if kind == "off":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "u8":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "u32":
                b.PrependUint32Slot(slot, value, 0)
        return b.EndObject()

    # input: image properties, normalisation, pixel statistics
    size = table([(0, "u32", resolution), (1, "u32", resolution)])  # ImageSize
    image_props = table([(0, "u8", _RGB), (1, "off", size)])  # ImageProperties
    in_content = table([(0, "u8", _IMAGE_PROPERTIES), (1, "off", image_props)])  # Content
    norm = table([(0, "off", vec_f32(mean)), (1, "off", vec_f32(std))])  # NormalizationOptions
    unit = table([(0, "u8", _NORMALIZATION_OPTIONS), (1, "off", norm)])  # ProcessUnit
    units = vec_tables([unit])
    in_stats = table([(0, "off", vec_f32([255.0])), (1, "off", vec_f32([0.0]))])  # Stats max/min
    in_name, in_desc = b.CreateString("image"), b.CreateString(
        f"RGB image, {resolution}x{resolution}, pixel values 0..255")
    in_tensor = table([(0, "off", in_name), (1, "off", in_desc), (3, "off", in_content),
                       (4, "off", units), (5, "off", in_stats)])  # TensorMetadata
    # output: class scores with the label file
    b.StartObject(0)
    feat = b.EndObject()  # FeatureProperties (empty table)
    out_content = table([(0, "u8", _FEATURE_PROPERTIES), (1, "off", feat)])
    lf_name, lf_desc = b.CreateString(labels_file), b.CreateString("Class labels, one per line")
    label_file = table([(0, "off", lf_name), (1, "off", lf_desc),
                        (2, "u8", _TENSOR_AXIS_LABELS)])  # AssociatedFile
    out_stats = table([(0, "off", vec_f32([1.0])), (1, "off", vec_f32([0.0]))])
    out_name, out_desc = b.CreateString("probability"), b.CreateString(
        "Softmax probability of each class")
    out_tensor = table([(0, "off", out_name), (1, "off", out_desc), (3, "off", out_content),
                        (5, "off", out_stats), (6, "off", vec_tables([label_file]))])
    sub = table([(2, "off", vec_tables([in_tensor])), (3, "off", vec_tables([out_tensor]))])
    m_name, m_desc, m_ver = b.CreateString(name), b.CreateString(description), \
        b.CreateString(version)
    m_author, m_parser = b.CreateString("edgeeff"), b.CreateString(PARSER_VERSION)
    root = table([(0, "off", m_name), (1, "off", m_desc), (2, "off", m_ver),
                  (3, "off", vec_tables([sub])), (4, "off", m_author), (7, "off", m_parser)])
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def _standard_buffer(meta: dict, labels_file: str) -> bytes:
    from edgeeff import __version__

    pp = Preprocessor.from_dict(meta["input"])
    mean, std = (list(pp.mean), list(pp.std)) if pp.normalized else ([0.0], [1.0])
    return _standard_metadata(
        meta["name"], f"{meta['name']} image classifier ({len(meta['labels'])} classes), "
        "by edgeeff", __version__, pp.resolution, mean, std, labels_file)


def _append_zip(model: bytes, files: dict[str, str]) -> bytes:
    """Associated files, zipped (stored, absolute offsets) after the flatbuffer."""
    import io
    import zipfile

    out = io.BytesIO(model)
    out.seek(0, 2)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return out.getvalue()


def package(model: bytes, meta: dict, labels_file: str = LABELS) -> bytes:
    """Both metadata forms in one rewrite: edgeeff's JSON buffer, and the standard
    TFLITE_METADATA with labels.txt packed into the file (MediaPipe / Task Library)."""
    tagged = _with_buffers(model, {METADATA_NAME: _json(meta),
                                   TFLITE_METADATA: _standard_buffer(meta, labels_file)})
    return _append_zip(tagged, {labels_file: "\n".join(meta["labels"]) + "\n"})

"""Rewrites of a finished .tflite model: the CPU form of its input, metadata packing, stripping.

They unpack the model into the object API of the generated schema (``ModelT``), change it and
pack it again; the pure-Python ``tflite`` package has no object API, so this uses the one of
ai-edge-litert (or TensorFlow's). Every rewrite runs in the export tier, where TensorFlow is
installed anyway; the device tier only reads (:mod:`edgeeff.tflite.reader`) and writes
synthetic graphs (:mod:`edgeeff.tflite.writer`), which need neither.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from edgeeff.core.artifacts import LABELS, METADATA_NAME
from edgeeff.core.graph import input_ops
from edgeeff.core.optional import MissingExtra, require
from edgeeff.tflite.metadata import TFLITE_METADATA, json_bytes, standard_buffer
from edgeeff.tflite.verify import verify


def object_api():
    """(flatbuffer_utils, generated schema with ``ModelT``) for unpacking and repacking."""
    try:
        s = require("ai_edge_litert.schema_py_generated", "rewriting .tflite files")
        fu = require("ai_edge_litert.tools.flatbuffer_utils", "rewriting .tflite files")
    except MissingExtra:  # TensorFlow-only installs
        s = require("tensorflow.lite.python.schema_py_generated", "rewriting .tflite files")
        fu = require("tensorflow.lite.tools.flatbuffer_utils", "rewriting .tflite files")
    return fu, s


def _name(m) -> str:
    return m.name.decode() if isinstance(m.name, bytes) else m.name


def append_metadata(model_obj, named: dict[str, bytes], schema) -> None:
    """Add one metadata entry per name to an unpacked model (``schema.ModelT``), each with
    its own buffer holding the bytes."""
    for name, data in named.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(data, np.uint8)
        model_obj.buffers.append(buf)
        md = schema.MetadataT()
        md.name = name
        md.buffer = len(model_obj.buffers) - 1
        model_obj.metadata.append(md)


def with_buffers(model: bytes, named: dict[str, bytes]) -> bytes:
    """``model`` with one metadata buffer per name (replacing entries of the same names)."""
    fu, s = object_api()
    obj = fu.convert_bytearray_to_object(bytearray(model))
    obj.metadata = [m for m in (obj.metadata or []) if _name(m) not in named]
    append_metadata(obj, named, s)
    return bytes(fu.convert_object_to_bytearray(obj))


def strip(model: bytes) -> bytes:
    """``model`` without edgeeff's JSON metadata (for flash-tight targets such as TFLM)."""
    fu, _ = object_api()
    obj = fu.convert_bytearray_to_object(bytearray(model))
    keep = []
    for m in obj.metadata or []:
        if _name(m) == METADATA_NAME:
            obj.buffers[m.buffer].data = None  # an empty buffer costs a few bytes
        else:
            keep.append(m)
    if len(keep) == len(obj.metadata or []):
        return model
    obj.metadata = keep
    return bytes(fu.convert_object_to_bytearray(obj))


def append_zip(model: bytes, files: dict[str, str]) -> bytes:
    """Associated files, zipped (stored, absolute offsets) after the flatbuffer."""
    out = io.BytesIO(model)
    out.seek(0, 2)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return out.getvalue()


def package(model: bytes, meta: dict, labels_file: str = LABELS) -> bytes:
    """Both metadata forms in one rewrite: edgeeff's JSON buffer (``meta``, from
    :func:`edgeeff.tflite.metadata.model_metadata`), and the standard TFLITE_METADATA with
    labels.txt packed into the file (MediaPipe / Task Library)."""
    tagged = with_buffers(model, {METADATA_NAME: json_bytes(meta),
                                  TFLITE_METADATA: standard_buffer(meta, labels_file)})
    return append_zip(tagged, {labels_file: "\n".join(meta["labels"]) + "\n"})


_CONVERTER = input_ops("uint8", "converter")  # ("QUANTIZE",)
_CPU = input_ops("uint8", "cpu")  # ("DEQUANTIZE", "QUANTIZE"): one op more, before it


def cpu_form(model: bytes) -> bytes:
    """``model`` with the converter form of its uint8 input (:func:`edgeeff.core.graph.input_ops`:
    one uint8 -> int8 ``QUANTIZE``) rewritten into the CPU form: a ``DEQUANTIZE`` (uint8 ->
    float32) and a ``QUANTIZE`` (float32 -> int8) to the same int8 tensor.

    XNNPACK runs that pair vectorised and threaded, where TFLite's own uint8 -> int8 kernel is
    scalar outside ARM NEON; both round (q - zp_in) * s_in / s_out to nearest, so the int8
    tensor holds the same values. A model with no such op (int8 input) is returned unchanged.
    """
    fu, s = object_api()
    obj = fu.convert_bytearray_to_object(bytearray(model))
    sg = obj.subgraphs[0]
    (convert,), added = _CONVERTER, _CPU[0]

    def builtin(i):
        c = obj.operatorCodes[i]
        return max(c.builtinCode, c.deprecatedBuiltinCode)

    first = [o for o in sg.operators if builtin(o.opcodeIndex) == getattr(s.BuiltinOperator, convert)
             and len(o.inputs) == 1 and int(o.inputs[0]) in [int(i) for i in sg.inputs]]
    if not first or sg.tensors[int(first[0].inputs[0])].type != s.TensorType.UINT8:
        return model
    q = first[0]
    src = sg.tensors[int(q.inputs[0])]
    f = s.TensorT()
    f.name, f.type, f.hasRank = b"image_float", s.TensorType.FLOAT32, True
    f.shape = np.array(src.shape, np.int32)
    f.shapeSignature = None if src.shapeSignature is None else np.array(src.shapeSignature,
                                                                         np.int32)
    obj.buffers.append(s.BufferT())
    f.buffer = len(obj.buffers) - 1
    sg.tensors.append(f)
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = getattr(s.BuiltinOperator, added)
    code.version = 1  # uint8 input
    obj.operatorCodes.insert(0, code)  # op codes are listed in order of first use
    for o in sg.operators:
        o.opcodeIndex += 1
    deq = s.OperatorT()
    deq.opcodeIndex = 0
    deq.inputs = np.array([q.inputs[0]], np.int32)
    deq.outputs = np.array([len(sg.tensors) - 1], np.int32)
    q.inputs = np.array([len(sg.tensors) - 1], np.int32)
    sg.operators.insert(sg.operators.index(q), deq)
    out = bytes(fu.convert_object_to_bytearray(obj))
    verify(out)
    return out

"""Metadata written into every artifact: a JSON buffer named ``edgeeff`` inside each .tflite.

It carries the model name, spec, labels, input normalisation and pixel range, so a lone .tflite
file is enough for ``edgeeff demo``/``eval``/``bench`` on a device (see runtime.Classifier).
"""

from __future__ import annotations

import json

import numpy as np

from edgeeff.runtime import METADATA_NAME


def _fb_utils():
    try:
        from ai_edge_litert import schema_py_generated as s
        from ai_edge_litert.tools import flatbuffer_utils as fu
    except ImportError:  # pragma: no cover - TensorFlow-only installs
        from tensorflow.lite.python import schema_py_generated as s
        from tensorflow.lite.tools import flatbuffer_utils as fu
    return fu, s


def embed(model: bytes, meta: dict) -> bytes:
    """``model`` with ``meta`` stored as JSON in a metadata buffer (replacing an older one)."""
    fu, s = _fb_utils()
    obj = fu.convert_bytearray_to_object(bytearray(model))
    data = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    buf = s.BufferT()
    buf.data = np.frombuffer(data, np.uint8)
    obj.buffers.append(buf)
    md = s.MetadataT()
    md.name = METADATA_NAME
    md.buffer = len(obj.buffers) - 1
    obj.metadata = [m for m in (obj.metadata or [])
                    if (m.name.decode() if isinstance(m.name, bytes) else m.name) != METADATA_NAME]
    obj.metadata.append(md)
    return bytes(fu.convert_object_to_bytearray(obj))


def model_metadata(name: str, spec: dict | None, resolution: int, labels: list[str],
                   input_record: dict, extra: dict | None = None) -> dict:
    from edgeeff import __version__

    return {
        "name": name,
        "producer": f"edgeeff {__version__}",
        "spec": spec,
        "input": {**input_record, "pixel_range": [0, 255], "color": "RGB",
                  "resolution": resolution},
        "labels": labels,
        **(extra or {}),
    }


def strip(model: bytes) -> bytes:
    """``model`` without edgeeff's metadata buffer (for flash-tight targets such as TFLM)."""
    fu, _ = _fb_utils()
    obj = fu.convert_bytearray_to_object(bytearray(model))
    keep, drop = [], []
    for m in obj.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        (drop if name == METADATA_NAME else keep).append(m)
    if not drop:
        return model
    obj.metadata = keep
    for m in sorted(drop, key=lambda m: -m.buffer):
        if m.buffer == len(obj.buffers) - 1:  # embed() appends it last
            obj.buffers.pop()
        else:
            obj.buffers[m.buffer].data = None
    return bytes(fu.convert_object_to_bytearray(obj))

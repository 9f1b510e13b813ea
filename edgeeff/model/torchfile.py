"""Read a PyTorch state dict (.pth) into numpy arrays without torch, safely.

A .pth file is a pickle, and a plain ``pickle.load`` of a downloaded file can run arbitrary
code. The unpickler here admits only what a state dict of tensors needs —
``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the typed storage classes —
and rebuilds tensors as numpy views of the raw storage bytes. Both on-disk layouts are read: the
legacy stream (magic number, protocol, sys info, object, storage keys, raw storages) and the zip
archive of torch >= 1.6 (``archive/data.pkl`` + ``archive/data/<key>``).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafePickleError(ValueError):
    """The file asks for something a plain tensor state dict never needs."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array: np.ndarray | None = None


class _LazyTensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray:
        base = self.storage.array
        if base is None:
            raise ValueError(f"storage {self.storage.key} has no data")
        item = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride))
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict):
        super().__init__(f)
        self._storages = storages

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise UnsafePickleError("storage of an unknown type")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, stype.dtype, int(numel))
        return self._storages[key]


def _legacy(data: bytes) -> dict:
    f = io.BytesIO(data)
    header = _Unpickler(f, {})
    if header.load() != LEGACY_MAGIC:
        raise ValueError("not a PyTorch file (bad magic number)")
    for _ in range(2):  # protocol version, sys info: plain ints/dicts only
        _Unpickler(f, {}).load()
    storages: dict = {}
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, {}).load()
    for key in keys:
        st = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * st.dtype.itemsize
        st.array = np.frombuffer(f.read(nbytes), dtype=st.dtype, count=numel)
    return obj


def _zip(data: bytes) -> dict:
    z = zipfile.ZipFile(io.BytesIO(data))
    pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
    prefix = pkl[: -len("data.pkl")]
    storages: dict = {}
    obj = _Unpickler(io.BytesIO(z.read(pkl)), storages).load()
    for key, st in storages.items():
        raw = z.read(f"{prefix}data/{key}")
        st.array = np.frombuffer(raw, dtype=st.dtype, count=st.numel)
    return obj


def load_state_dict(path) -> dict[str, np.ndarray]:
    """name -> numpy array, for a .pth file holding a (possibly nested) dict of tensors."""
    with open(path, "rb") as fh:
        data = fh.read()
    obj = _zip(data) if data[:2] == b"PK" else _legacy(data)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError("the file does not hold a state dict")
    out = {}
    for k, v in obj.items():
        if isinstance(v, _LazyTensor):
            out[str(k)] = v.materialize()
    return out

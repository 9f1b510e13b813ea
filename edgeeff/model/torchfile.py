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
import math
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import raise_if_interrupted

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchFileError(EdgeeffError, ValueError):
    """A .pth file this reader refuses: damaged, truncated, or a tensor reaching outside its
    storage. ``reason`` says what; ``path`` is the file (None until :func:`load_state_dict`
    knows it)."""

    def __init__(self, reason: str, path=None):
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class UnsafePickleError(TorchFileError):
    """The file asks for something a plain tensor state dict never needs."""


# A tensor may broadcast its storage (stride 0) to more elements than the storage holds, up to
# this many; beyond it a damaged size would only allocate memory.
MAX_BROADCAST_ELEMENTS = 2**24


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
        """A copy of the tensor, after checking that every element it reaches lies inside
        its storage (as_strided itself would read whatever memory the numbers point at)."""
        base = self.storage.array
        if base is None:
            raise TorchFileError(f"storage {self.storage.key} has no data")
        (offset,) = _ints("offset", (self.offset,))
        size, stride = _ints("sizes", self.size), _ints("strides", self.stride)
        if len(size) != len(stride):
            raise TorchFileError(f"{len(size)} sizes but {len(stride)} strides")
        if offset < 0:
            raise TorchFileError(f"storage offset {offset} is negative")
        if any(n < 0 for n in size):
            raise TorchFileError(f"negative size in {list(size)}")
        if any(s < 0 for s in stride):
            raise TorchFileError(f"negative stride in {list(stride)}")
        numel = math.prod(size)
        if numel > max(len(base), MAX_BROADCAST_ELEMENTS):
            raise TorchFileError(f"size {list(size)} ({numel:,} elements) is absurd for a "
                                 f"storage of {len(base):,}")
        if numel == 0:
            if offset > len(base):
                raise TorchFileError(f"storage offset {offset} is past the storage's "
                                     f"{len(base)} elements")
            return np.empty(size, base.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(base):
            raise TorchFileError(f"offset {offset}, size {list(size)}, stride {list(stride)} "
                                 f"reach element {last} of a {len(base)}-element storage")
        item = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[offset:], shape=size, strides=tuple(s * item for s in stride))
        return np.array(view, copy=True)


def _ints(what: str, values) -> tuple[int, ...]:
    try:
        out = tuple(values)
    except TypeError:
        raise TorchFileError(f"tensor {what} {values!r} is not a sequence") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
        raise TorchFileError(f"tensor {what} {out!r} are not all integers")
    return out


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise TorchFileError("a tensor without a storage")
    return _LazyTensor(storage, storage_offset, size, stride)  # checked by materialize()


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
        if len(pid) < 5:
            raise TorchFileError(f"malformed storage reference {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise UnsafePickleError("storage of an unknown type")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise TorchFileError(f"storage {key} has a bad element count {numel!r}")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, stype.dtype, int(numel))
        return self._storages[key]


def _legacy(data: bytes) -> dict:
    f = io.BytesIO(data)
    header = _Unpickler(f, {})
    if header.load() != LEGACY_MAGIC:
        raise TorchFileError("not a PyTorch file (bad magic number)")
    for _ in range(2):  # protocol version, sys info: plain ints/dicts only
        _Unpickler(f, {}).load()
    storages: dict = {}
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, {}).load()
    if not isinstance(keys, list):
        raise TorchFileError("no list of storage keys after the object")
    for key in keys:
        st = storages.get(str(key))
        if st is None:
            raise TorchFileError(f"storage {key} is listed but no tensor uses it")
        head = f.read(8)
        if len(head) < 8:
            raise TorchFileError(f"truncated before storage {key}")
        (numel,) = struct.unpack("<q", head)
        if numel != st.numel:
            raise TorchFileError(f"storage {key} holds {numel} elements, its tensors "
                                 f"declared {st.numel}")
        nbytes = numel * st.dtype.itemsize
        left = len(data) - f.tell()
        if nbytes > left:
            raise TorchFileError(f"storage {key} needs {nbytes:,} bytes, the file has {left:,} left")
        st.array = np.frombuffer(f.read(nbytes), dtype=st.dtype, count=numel)
    return obj


def _zip(data: bytes) -> dict:
    z = zipfile.ZipFile(io.BytesIO(data))
    pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
    if pkl is None:
        raise TorchFileError("a zip archive without data.pkl")
    prefix = pkl[: -len("data.pkl")]
    storages: dict = {}
    obj = _Unpickler(io.BytesIO(z.read(pkl)), storages).load()
    for key, st in storages.items():
        name = f"{prefix}data/{key}"
        try:
            info = z.getinfo(name)
        except KeyError:
            raise TorchFileError(f"storage {key} has no record {name} in the archive") from None
        nbytes = st.numel * st.dtype.itemsize
        if info.file_size < nbytes:
            raise TorchFileError(f"storage {key} needs {nbytes:,} bytes, its record has "
                                 f"{info.file_size:,}")
        with z.open(info) as fh:  # only the bytes the storage declares
            raw = fh.read(nbytes)
        if len(raw) < nbytes:
            raise TorchFileError(f"storage {key}: record truncated at {len(raw):,} bytes")
        st.array = np.frombuffer(raw, dtype=st.dtype, count=st.numel)
    return obj


def load_state_dict(path) -> dict[str, np.ndarray]:
    """name -> numpy array, for a .pth file holding a (possibly nested) dict of tensors."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        obj = _zip(data) if data[:2] == b"PK" else _legacy(data)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise TorchFileError("the file does not hold a state dict")
        out = {}
        for k, v in obj.items():
            if isinstance(v, _LazyTensor):
                try:
                    out[str(k)] = v.materialize()
                except TorchFileError as e:
                    raise TorchFileError(f"tensor {k!r}: {e.reason}") from None
        return out
    except TorchFileError as e:
        raise type(e)(e.reason, path) from None
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, zlib.error,
            ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as e:
        raise_if_interrupted()  # unpickling runs Python callbacks a Ctrl-C can break
        raise TorchFileError(f"not a readable PyTorch file ({type(e).__name__}: {e})",
                             path) from None

"""Read a .tflite flatbuffer: operators, tensors, types, quantisation, constant bytes.

Reads through the pure-Python ``tflite`` package's generated classes
(:mod:`edgeeff.tflite.schema`), so no TFLite runtime and no TensorFlow is needed. Those classes
read wherever an offset points, so :func:`edgeeff.tflite.verify.verify` walks every file first
(:func:`read`, :func:`operator_codes`, :func:`metadata_buffer` and :func:`read_model_file` call
it): a damaged file is a :class:`ModelFileError`, never a ``struct.error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.graph import input_dtypes, input_ops
from edgeeff.tflite.schema import BUILTIN_NAMES, TENSOR_TYPE_NAMES, tfl
from edgeeff.tflite.verify import ModelFileError, NotAClassifierError, verify

__all__ = ["ModelFileError", "NotAClassifierError", "OpInfo", "TFLiteGraph", "TensorInfo", "verify",
           "input_conversion", "metadata_buffer", "non_integer_ops", "operator_codes", "read",
           "read_model_file"]


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    is_constant: bool
    nbytes: int
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]


@dataclass
class OpInfo:
    index: int
    name: str  # builtin name, e.g. "CONV_2D"
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class TFLiteGraph:
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    metadata_names: tuple[str, ...]

    @property
    def op_names(self) -> list[str]:
        return sorted({o.name for o in self.ops})

    def constant_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.is_constant)


def _name(s: bytes | None) -> str:
    return (s or b"").decode(errors="replace")


def metadata_buffer(model: bytes, name: str, path=None, verified: bool = False) -> bytes | None:
    """The bytes of the metadata buffer called ``name`` (e.g. edgeeff's JSON), if any.
    ``verified``: the caller already ran :func:`verify` on these bytes."""
    if not verified:
        verify(model, path)
    m = tfl.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        if _name(md.Name()) == name:
            buf = m.Buffers(md.Buffer())
            return buf.DataAsNumpy().tobytes() if buf is not None and buf.DataLength() else b""
    return None


def _operator_codes(m) -> list[tuple[str, int]]:
    out = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = BUILTIN_NAMES.get(code, str(code))
        if name == "CUSTOM":
            name = "CUSTOM:" + _name(oc.CustomCode())
        out.append((name, int(oc.Version())))
    return out


def operator_codes(model: bytes, path=None) -> list[tuple[str, int]]:
    """(builtin name, version) of every operator code, in table order (verified first)."""
    verify(model, path)
    return _operator_codes(tfl.Model.GetRootAs(model, 0))


def _ints(length: int, as_numpy) -> tuple[int, ...]:
    return tuple(int(x) for x in as_numpy()) if length else ()


def read(model: bytes, path=None) -> TFLiteGraph:
    """The first subgraph of ``model``; :class:`ModelFileError` (naming ``path``) if damaged."""
    verify(model, path)
    m = tfl.Model.GetRootAs(model, 0)
    codes = [name for name, _ in _operator_codes(m)]
    sg = m.Subgraphs(0)
    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        buf = m.Buffers(t.Buffer())
        nbytes = buf.DataLength() if buf is not None else 0
        if buf is not None and nbytes == 0 and buf.Size():
            nbytes = buf.Size()  # large models keep data outside the flatbuffer table
        q = t.Quantization()
        scale = tuple(q.ScaleAsNumpy().tolist()) if q is not None and q.ScaleLength() else ()
        zp = tuple(q.ZeroPointAsNumpy().tolist()) if q is not None and q.ZeroPointLength() else ()
        tensors.append(TensorInfo(
            index=i, name=_name(t.Name()), shape=_ints(t.ShapeLength(), t.ShapeAsNumpy),
            dtype=TENSOR_TYPE_NAMES.get(t.Type(), str(t.Type())), is_constant=nbytes > 0,
            nbytes=nbytes, scale=scale, zero_point=zp,
        ))
    ops = []
    for i in range(sg.OperatorsLength()):
        o = sg.Operators(i)
        ops.append(OpInfo(index=i, name=codes[o.OpcodeIndex()],
                          inputs=_ints(o.InputsLength(), o.InputsAsNumpy),
                          outputs=_ints(o.OutputsLength(), o.OutputsAsNumpy)))
    meta = tuple(_name(m.Metadata(i).Name()) for i in range(m.MetadataLength()))
    return TFLiteGraph(ops=ops, tensors=tensors,
                       inputs=_ints(sg.InputsLength(), sg.InputsAsNumpy),
                       outputs=_ints(sg.OutputsLength(), sg.OutputsAsNumpy),
                       metadata_names=meta)


def input_conversion(g: TFLiteGraph) -> tuple[int, ...]:
    """Indices of the ops that turn a uint8 model input into int8 through float32 (the CPU form
    of edgeeff's int8 models, :func:`edgeeff.core.graph.input_ops`): a chain from the input in
    which each op's output is read by the next op only; () when ``g`` has no such chain."""
    kinds, dtypes = input_ops("uint8", "cpu"), input_dtypes("uint8", "cpu")
    first = [o for o in g.ops if o.name == kinds[0] and len(o.inputs) == 1
             and o.inputs[0] in g.inputs and g.tensors[o.inputs[0]].dtype == dtypes[0]]
    if len(first) != 1:
        return ()
    chain = [first[0]]
    for kind, dtype in zip(kinds[1:], dtypes[1:-1]):
        prev = chain[-1]
        if len(prev.outputs) != 1 or prev.outputs[0] in g.outputs \
                or g.tensors[prev.outputs[0]].dtype != dtype:
            return ()
        readers = [o for o in g.ops if prev.outputs[0] in o.inputs]
        if len(readers) != 1 or readers[0].name != kind:
            return ()
        chain.append(readers[0])
    if any(g.tensors[t].dtype != dtypes[-1] for t in chain[-1].outputs):
        return ()
    return tuple(o.index for o in chain)


def non_integer_ops(g: TFLiteGraph) -> list[str]:
    """Ops that touch a float tensor (an int8 model should have none, bar its I/O quantisers:
    the uint8 input's conversion through float32, :func:`input_conversion`, is not counted)."""
    bad = []
    allowed = set(input_conversion(g))
    for op in g.ops:
        if op.index in allowed:
            continue
        for t in op.inputs + op.outputs:
            if t >= 0 and g.tensors[t].dtype in ("float32", "float16"):
                bad.append(f"{op.name}#{op.index}")
                break
    return bad


def read_model_file(path) -> bytes:
    """The bytes of the .tflite file at ``path``, verified (ModelFileError otherwise)."""
    p = Path(path)
    if p.is_dir():
        raise ModelFileError(p, "it is a directory")
    if p.exists() and not p.is_file():  # a FIFO or device would never end
        raise ModelFileError(p, "not a regular file")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise EdgeeffError(f"model not found: {p}") from None
    except OSError as e:
        raise ModelFileError(p, f"cannot read it: {e.strerror or e}") from None
    verify(data, p)
    return data

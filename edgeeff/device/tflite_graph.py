"""Read a .tflite flatbuffer: operators, tensors, types, quantisation, constant bytes.

Uses the generated flatbuffer schema that ships with the runtime we already depend on
(ai-edge-litert, else tflite-micro), so no TensorFlow is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeeff.core.errors import EdgeeffError


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:
        try:
            from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s
        except ImportError:
            raise EdgeeffError("reading .tflite files needs ai-edge-litert: "
                               "pip install 'edgeeff[runtime]'") from None
    return s


_TYPE_NAMES = None


def _type_name(code: int) -> str:
    global _TYPE_NAMES
    if _TYPE_NAMES is None:
        t = _schema().TensorType
        _TYPE_NAMES = {v: k for k, v in vars(t).items() if not k.startswith("_")}
    return _TYPE_NAMES.get(code, str(code)).lower()


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


def metadata_buffer(model: bytes, name: str) -> bytes | None:
    """The bytes of the metadata buffer called ``name`` (e.g. edgeeff's JSON), if any."""
    m = _schema().Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        if (md.Name() or b"").decode(errors="replace") == name:
            buf = m.Buffers(md.Buffer())
            return buf.DataAsNumpy().tobytes() if buf is not None and buf.DataLength() else b""
    return None


def read(model: bytes) -> TFLiteGraph:
    s = _schema()
    m = s.Model.GetRootAs(model, 0)
    if m.SubgraphsLength() < 1:
        raise ValueError("model has no subgraph")
    builtin = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = builtin.get(code, str(code))
        if name == "CUSTOM":
            name = "CUSTOM:" + (oc.CustomCode() or b"").decode()
        codes.append(name)
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
            index=i, name=(t.Name() or b"").decode(errors="replace"),
            shape=tuple(t.ShapeAsNumpy().tolist()) if t.ShapeLength() else (),
            dtype=_type_name(t.Type()), is_constant=nbytes > 0, nbytes=nbytes,
            scale=scale, zero_point=zp,
        ))
    ops = []
    for i in range(sg.OperatorsLength()):
        o = sg.Operators(i)
        ops.append(OpInfo(
            index=i, name=codes[o.OpcodeIndex()],
            inputs=tuple(int(x) for x in o.InputsAsNumpy()) if o.InputsLength() else (),
            outputs=tuple(int(x) for x in o.OutputsAsNumpy()) if o.OutputsLength() else (),
        ))
    meta = tuple((m.Metadata(i).Name() or b"").decode() for i in range(m.MetadataLength()))
    return TFLiteGraph(
        ops=ops, tensors=tensors,
        inputs=tuple(int(x) for x in sg.InputsAsNumpy()),
        outputs=tuple(int(x) for x in sg.OutputsAsNumpy()),
        metadata_names=meta,
    )


def non_integer_ops(g: TFLiteGraph) -> list[str]:
    """Ops that touch a float tensor (an int8 model should have none, bar its I/O quantisers)."""
    bad = []
    for op in g.ops:
        for t in op.inputs + op.outputs:
            if t >= 0 and g.tensors[t].dtype in ("float32", "float16"):
                bad.append(f"{op.name}#{op.index}")
                break
    return bad

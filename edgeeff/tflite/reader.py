"""Read a .tflite flatbuffer into :class:`edgeeff.core.graph.Graph`: the one reader.

The graph is the structure the cost model predicts and the synthetic writer writes, so the
three compare op by op, and it carries what the exporters read beside it: every op's full
operand and output lists, each tensor's dtype, quantisation and stored constant bytes (data
kept outside the flatbuffer table by large models included), the operator-code table with its
versions and the metadata names. Activation shapes lose their batch of 1 (as in the predicted
graph; :attr:`~edgeeff.core.graph.Tensor.file_shape` puts it back); an op's ``inputs`` are its
activation operands, ``operands`` its full TFLite input list. What the file says about each op
(builtin, kernel, stride, padding, fused activation, keep_dims) is filled in; ``role`` and
``stage`` are not in a file and stay empty.

Reads through the pure-Python ``tflite`` package's generated classes
(:mod:`edgeeff.tflite.schema`), so no TFLite runtime and no TensorFlow is needed. Those classes
read wherever an offset points, so :func:`edgeeff.tflite.verify.verify` walks every file first
(:func:`read`, :func:`operator_codes`, :func:`metadata_buffer` and :func:`read_model_file` call
it): a damaged file is a :class:`ModelFileError`, never a ``struct.error``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeeff.core.errors import EdgeeffError
from edgeeff.core.graph import Graph, Op, Quant, Tensor, input_dtypes, input_ops
from edgeeff.tflite.schema import BUILTIN_NAMES, TENSOR_TYPE_NAMES, tfl
from edgeeff.tflite.verify import ModelFileError, NotAClassifierError, verify

__all__ = ["ModelFileError", "NotAClassifierError", "verify", "input_conversion",
           "metadata_buffer", "non_integer_ops", "operator_codes", "read", "read_model_file",
           "collapsed_activations", "COLLAPSED_SCALE"]

_ACTIVATIONS = {v: k for k, v in vars(tfl.ActivationFunctionType).items() if not k.startswith("_")}
_PADDINGS = {v: k for k, v in vars(tfl.Padding).items() if not k.startswith("_")}
_BO = tfl.BuiltinOptions
# builtin -> (its BuiltinOptions type code, the options class)
_CONV_OPTIONS = {"CONV_2D": (_BO.Conv2DOptions, tfl.Conv2DOptions),
                 "DEPTHWISE_CONV_2D": (_BO.DepthwiseConv2DOptions, tfl.DepthwiseConv2DOptions)}
_FUSED_OPTIONS = {"ADD": (_BO.AddOptions, tfl.AddOptions), "MUL": (_BO.MulOptions, tfl.MulOptions),
                  "FULLY_CONNECTED": (_BO.FullyConnectedOptions, tfl.FullyConnectedOptions)}
_MEAN_OPTIONS = (_BO.ReducerOptions, tfl.ReducerOptions)


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


def _ints(length: int, as_numpy) -> list[int]:
    return [int(x) for x in as_numpy()] if length else []


def _options(op, kind_cls):
    """The op's options table as ``kind_cls`` (type code, class), None when it holds another."""
    code, cls = kind_cls
    t = op.BuiltinOptions()
    if t is None or op.BuiltinOptionsType() != code:
        return None
    o = cls()
    o.Init(t.Bytes, t.Pos)
    return o


def _data(model, m, t) -> np.ndarray | None:
    """A tensor's stored bytes (a read-only view of ``model``), None when it has none."""
    buf = m.Buffers(t.Buffer())
    if buf is None:
        return None
    if buf.DataLength():
        return buf.DataAsNumpy()
    if buf.Offset() > 1 and buf.Size():  # large models keep data after the flatbuffer
        return np.frombuffer(model, np.uint8, count=buf.Size(), offset=buf.Offset())
    return None


def _tensor(model, m, t) -> Tensor:
    data = _data(model, m, t)
    shape = tuple(_ints(t.ShapeLength(), t.ShapeAsNumpy))
    batched = data is None and shape[:1] == (1,)
    if batched:
        shape = shape[1:]  # an activation: batch 1
    q = t.Quantization()
    quant = None
    if q is not None and q.ScaleLength():
        zp = q.ZeroPointAsNumpy().copy() if q.ZeroPointLength() else np.zeros(0, np.int64)
        quant = Quant(q.ScaleAsNumpy().copy(), zp, int(q.QuantizedDimension()))
    dtype = TENSOR_TYPE_NAMES.get(t.Type(), str(t.Type()))
    return Tensor(_name(t.Name()), shape, dtype, quant, data, batched=batched or data is not None)


def _op(o, kind: str, tensors: list[Tensor]) -> Op:
    operands = _ints(o.InputsLength(), o.InputsAsNumpy)
    outputs = _ints(o.OutputsLength(), o.OutputsAsNumpy)
    acts = [t for t in operands if t >= 0 and not tensors[t].is_constant]
    out = outputs[0] if outputs else -1
    op = Op(tensors[out].name if out >= 0 else "", kind, acts, out,
            in_shapes=tuple(tensors[t].shape for t in acts),
            out_shape=tensors[out].shape if out >= 0 else (), operands=operands, outputs=outputs)
    if kind in _CONV_OPTIONS:
        if len(operands) > 1 and operands[1] >= 0 and len(tensors[operands[1]].shape) > 1:
            op.kernel = int(tensors[operands[1]].shape[1])  # [O, k, k, I] or [1, k, k, C]
        opt = _options(o, _CONV_OPTIONS[kind])
        if opt is not None:
            op.stride = int(opt.StrideH())
            op.padding = _PADDINGS.get(opt.Padding(), str(opt.Padding()))
            act = opt.FusedActivationFunction()
            op.activation = _ACTIVATIONS.get(act, str(act))
    elif kind in _FUSED_OPTIONS:
        opt = _options(o, _FUSED_OPTIONS[kind])
        if opt is not None:
            act = opt.FusedActivationFunction()
            op.activation = _ACTIVATIONS.get(act, str(act))
    elif kind == "MEAN":
        opt = _options(o, _MEAN_OPTIONS)
        op.keep_dims = bool(opt.KeepDims()) if opt is not None else False
    return op


def read(model: bytes, path=None, verified: bool = False) -> Graph:
    """The first subgraph of ``model`` as a :class:`~edgeeff.core.graph.Graph` (``io`` from
    the input's dtype, ``form`` "converter" when a uint8 input goes through one QUANTIZE, else
    "cpu"); :class:`ModelFileError` (naming ``path``) if damaged. ``verified``: the caller
    already ran :func:`verify` on these bytes (:func:`read_model_file` does)."""
    if not verified:
        verify(model, path)
    m = tfl.Model.GetRootAs(model, 0)
    codes = _operator_codes(m)
    sg = m.Subgraphs(0)
    tensors = [_tensor(model, m, sg.Tensors(i)) for i in range(sg.TensorsLength())]
    g = Graph(tensors=tensors, inputs=_ints(sg.InputsLength(), sg.InputsAsNumpy),
              outputs=_ints(sg.OutputsLength(), sg.OutputsAsNumpy), op_codes=tuple(codes),
              metadata=tuple(_name(m.Metadata(i).Name()) for i in range(m.MetadataLength())))
    for i in range(sg.OperatorsLength()):
        o = sg.Operators(i)
        g.ops.append(_op(o, codes[o.OpcodeIndex()][0], tensors))
    g.io = tensors[g.inputs[0]].dtype if g.inputs else "int8"
    uint8_quantize = g.io == "uint8" and g.ops and g.ops[0].kind == "QUANTIZE"
    g.form = "converter" if uint8_quantize else "cpu"
    return g


def input_conversion(g: Graph) -> tuple[int, ...]:
    """Indices of the ops that turn a uint8 model input into int8 through float32 (the CPU form
    of edgeeff's int8 models, :func:`edgeeff.core.graph.input_ops`): a chain from the input in
    which each op's output is read by the next op only; () when ``g`` has no such chain."""
    kinds, dtypes = input_ops("uint8", "cpu"), input_dtypes("uint8", "cpu")
    first = [i for i, o in enumerate(g.ops) if o.kind == kinds[0] and len(o.all_inputs) == 1
             and o.all_inputs[0] in g.inputs and g.tensors[o.all_inputs[0]].dtype == dtypes[0]]
    if len(first) != 1:
        return ()
    chain = [first[0]]
    for kind, dtype in zip(kinds[1:], dtypes[1:-1]):
        outs = g.ops[chain[-1]].all_outputs
        if len(outs) != 1 or outs[0] < 0 or outs[0] in g.outputs \
                or g.tensors[outs[0]].dtype != dtype:
            return ()
        readers = [i for i, o in enumerate(g.ops) if outs[0] in o.all_inputs]
        if len(readers) != 1 or g.ops[readers[0]].kind != kind:
            return ()
        chain.append(readers[0])
    if any(g.tensors[t].dtype != dtypes[-1] for t in g.ops[chain[-1]].all_outputs):
        return ()
    return tuple(chain)


def non_integer_ops(g: Graph) -> list[str]:
    """Ops that touch a float tensor (an int8 model should have none, bar its I/O quantisers:
    the uint8 input's conversion through float32, :func:`input_conversion`, is not counted)."""
    bad = []
    allowed = set(input_conversion(g))
    for i, op in enumerate(g.ops):
        if i in allowed:
            continue
        for t in op.all_inputs + op.all_outputs:
            if t >= 0 and g.tensors[t].dtype in ("float32", "float16"):
                bad.append(f"{op.kind}#{i}")
                break
    return bad


# An int8 activation whose scale is below this spans less than 2.6e-4 over its 256 steps: the
# trained float values there have collapsed to about zero (a dead layer: a ReLU6 whose inputs
# all went negative), so nothing the model computed before reaches past it.
COLLAPSED_SCALE = 1e-6


def collapsed_activations(g: Graph) -> list[str]:
    """Names of the quantized activations (not constants) whose every scale is below
    :data:`COLLAPSED_SCALE`. XNNPACK cannot prepare an op on such a tensor: ai-edge-litert's
    default delegate aborts the process ("double free or corruption") or refuses the model,
    where TFLite's own kernels run it; and the int8 model carries no signal past it."""
    return [t.name for t in g.tensors
            if not t.is_constant and t.dtype in ("int8", "uint8") and t.quant is not None
            and len(t.quant.scale) and float(np.max(t.quant.scale)) < COLLAPSED_SCALE]


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

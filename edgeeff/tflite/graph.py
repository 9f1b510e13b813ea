"""Read a .tflite file into :class:`edgeeff.core.graph.Graph`, the structure the cost model
predicts and the synthetic writer writes, so that the three can be compared op by op.

Activation shapes lose their batch dimension (as in the predicted graph); an op's ``inputs``
are its activation operands, ``operands`` its full TFLite input list. What the file says about
each op (builtin, kernel, stride, padding, fused activation, keep_dims, shapes, dtypes) is
filled in; ``role`` and ``stage`` are not in a file and stay empty. The bytes are verified first
(the generated accessors read wherever an offset points): a damaged file is a ModelFileError.
"""

from __future__ import annotations

from edgeeff.core.graph import Graph, Op, Quant, Tensor
from edgeeff.tflite.schema import BUILTIN_NAMES, TENSOR_TYPE_NAMES, tfl
from edgeeff.tflite.verify import verify

_ACTIVATIONS = {v: k for k, v in vars(tfl.ActivationFunctionType).items() if not k.startswith("_")}
_PADDINGS = {v: k for k, v in vars(tfl.Padding).items() if not k.startswith("_")}
_CONV_OPTIONS = {"CONV_2D": tfl.Conv2DOptions, "DEPTHWISE_CONV_2D": tfl.DepthwiseConv2DOptions}
_FUSED_OPTIONS = {"ADD": tfl.AddOptions, "MUL": tfl.MulOptions,
                  "FULLY_CONNECTED": tfl.FullyConnectedOptions}


def _table(op, cls):
    t = op.BuiltinOptions()
    if t is None:
        return None
    o = cls()
    o.Init(t.Bytes, t.Pos)
    return o


def _tensor(m, t) -> Tensor:
    buf = m.Buffers(t.Buffer())
    data = buf.DataAsNumpy() if buf is not None and buf.DataLength() else None
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    if data is None and shape[:1] == (1,):
        shape = shape[1:]  # an activation: batch 1
    q = t.Quantization()
    quant = None
    if q is not None and q.ScaleLength():
        quant = Quant(q.ScaleAsNumpy().copy(), q.ZeroPointAsNumpy().copy(),
                      int(q.QuantizedDimension()))
    dtype = TENSOR_TYPE_NAMES.get(t.Type(), str(t.Type()))
    return Tensor((t.Name() or b"").decode(errors="replace"), shape, dtype, quant,
                  None if data is None else data.copy())


def read_graph(model: bytes, path=None) -> Graph:
    """The first subgraph of ``model`` as a :class:`Graph` (``io`` from the input's dtype,
    ``form`` "converter" when a uint8 input goes through one QUANTIZE, else "cpu")."""
    verify(model, path)
    m = tfl.Model.GetRootAs(model, 0)
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(BUILTIN_NAMES.get(code, str(code)))
    sg = m.Subgraphs(0)
    tensors = [_tensor(m, sg.Tensors(i)) for i in range(sg.TensorsLength())]
    g = Graph(tensors=tensors, inputs=[int(i) for i in sg.InputsAsNumpy()],
              outputs=[int(i) for i in sg.OutputsAsNumpy()])
    for i in range(sg.OperatorsLength()):
        o = sg.Operators(i)
        kind = codes[o.OpcodeIndex()]
        operands = [int(t) for t in o.InputsAsNumpy()] if o.InputsLength() else []
        acts = [t for t in operands if t >= 0 and not tensors[t].is_constant]
        out = int(o.Outputs(0))
        op = Op(tensors[out].name, kind, acts, out, in_shapes=tuple(tensors[t].shape for t in acts),
                out_shape=tensors[out].shape, operands=operands)
        if kind in _CONV_OPTIONS:
            opt = _table(o, _CONV_OPTIONS[kind])
            op.kernel = int(tensors[operands[1]].shape[1])  # [O, k, k, I] or [1, k, k, C]
            op.stride = int(opt.StrideH())
            op.padding = _PADDINGS[opt.Padding()]
            op.activation = _ACTIVATIONS[opt.FusedActivationFunction()]
        elif kind in _FUSED_OPTIONS:
            opt = _table(o, _FUSED_OPTIONS[kind])
            if opt is not None:
                op.activation = _ACTIVATIONS[opt.FusedActivationFunction()]
        elif kind == "MEAN":
            opt = _table(o, tfl.ReducerOptions)
            op.keep_dims = bool(opt.KeepDims()) if opt is not None else False
        g.ops.append(op)
    g.io = tensors[g.inputs[0]].dtype if g.inputs else "int8"
    uint8_quantize = g.io == "uint8" and g.ops and g.ops[0].kind == "QUANTIZE"
    g.form = "converter" if uint8_quantize else "cpu"
    return g


def signature(g: Graph) -> list[tuple]:
    """Per op what the runtime sees, for comparing graphs op by op: builtin, kernel, stride,
    padding, fused activation, keep_dims, activation input shapes and dtypes, output shape
    and dtype."""
    return [(op.kind, op.kernel, op.stride, op.padding, op.activation, op.keep_dims,
             tuple((g.tensors[t].shape, g.tensors[t].dtype) for t in op.inputs),
             (g.tensors[op.output].shape, g.tensors[op.output].dtype)) for op in g.ops]

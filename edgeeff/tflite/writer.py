"""Write an int8 :class:`edgeeff.core.graph.Graph` with weights attached as a .tflite flatbuffer.

Built with the ``tflite`` package's generated builder functions and ``flatbuffers.Builder``
(no object API, no TensorFlow), so it runs wherever the pure-Python ``tflite`` package installs,
32-bit Raspberry Pi OS included. The file is laid out as TFLiteConverter lays out its int8
models: op codes in order of first use with the converter's versions, the tensor table as the
input, the constants (last layer first), then the activations in execution order, every
activation with a ``-1`` batch in its shape signature, constant data aligned to 16 bytes, the
``serving_default`` signature and a ``min_runtime_version`` metadata entry before the caller's.
"""

from __future__ import annotations

import flatbuffers
import numpy as np

from edgeeff.core.graph import Graph, Op
from edgeeff.tflite.schema import BUILTIN_CODES, FILE_IDENTIFIER, SCHEMA_VERSION, TENSOR_TYPE_CODES, tfl

# Op versions the converter writes for these int8 graphs (TF 2.16-2.21).
OP_VERSIONS = {
    "DEQUANTIZE": 1, "QUANTIZE": 1, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "ADD": 2, "MUL": 2,
    "LOGISTIC": 2, "MEAN": 2, "FULLY_CONNECTED": 4, "SOFTMAX": 2,
}
MIN_RUNTIME_VERSION = "1.14.0"
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "output_0"
_ALIGN = 16  # constant data starts on a 16-byte boundary, as the converter writes it


def tensor_order(g: Graph) -> list[int]:
    """Indices of ``g``'s tensors in the converter's table order: the input, the constants in
    reverse order of first use (last layer first), then the activations in execution order."""
    consts: list[int] = []
    seen: set[int] = set()
    for op in g.ops:
        for t in op.operands if op.operands is not None else op.inputs:
            if t >= 0 and g.tensors[t].is_constant and t not in seen:
                seen.add(t)
                consts.append(t)
    return list(g.inputs) + consts[::-1] + [op.output for op in g.ops]


def _options(b: flatbuffers.Builder, op: Op) -> tuple[int, int | None]:
    """(BuiltinOptions type, options table) as the converter writes them."""
    BO, act = tfl.BuiltinOptions, getattr(tfl.ActivationFunctionType, op.activation)
    pad = getattr(tfl.Padding, op.padding) if op.padding else tfl.Padding.SAME
    k = op.kind
    if k == "CONV_2D":
        tfl.Conv2DOptionsStart(b)
        tfl.Conv2DOptionsAddPadding(b, pad)
        tfl.Conv2DOptionsAddStrideW(b, op.stride)
        tfl.Conv2DOptionsAddStrideH(b, op.stride)
        tfl.Conv2DOptionsAddFusedActivationFunction(b, act)
        tfl.Conv2DOptionsAddDilationWFactor(b, 1)
        tfl.Conv2DOptionsAddDilationHFactor(b, 1)
        return BO.Conv2DOptions, tfl.Conv2DOptionsEnd(b)
    if k == "DEPTHWISE_CONV_2D":
        tfl.DepthwiseConv2DOptionsStart(b)
        tfl.DepthwiseConv2DOptionsAddPadding(b, pad)
        tfl.DepthwiseConv2DOptionsAddStrideW(b, op.stride)
        tfl.DepthwiseConv2DOptionsAddStrideH(b, op.stride)
        tfl.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        tfl.DepthwiseConv2DOptionsAddFusedActivationFunction(b, act)
        tfl.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        tfl.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        return BO.DepthwiseConv2DOptions, tfl.DepthwiseConv2DOptionsEnd(b)
    if k == "ADD":
        tfl.AddOptionsStart(b)
        tfl.AddOptionsAddFusedActivationFunction(b, act)
        tfl.AddOptionsAddPotScaleInt16(b, True)
        return BO.AddOptions, tfl.AddOptionsEnd(b)
    if k == "MUL":
        tfl.MulOptionsStart(b)
        tfl.MulOptionsAddFusedActivationFunction(b, act)
        return BO.MulOptions, tfl.MulOptionsEnd(b)
    if k == "MEAN":
        tfl.ReducerOptionsStart(b)
        tfl.ReducerOptionsAddKeepDims(b, bool(op.keep_dims))
        return BO.ReducerOptions, tfl.ReducerOptionsEnd(b)
    if k == "FULLY_CONNECTED":
        tfl.FullyConnectedOptionsStart(b)
        tfl.FullyConnectedOptionsAddFusedActivationFunction(b, act)
        return BO.FullyConnectedOptions, tfl.FullyConnectedOptionsEnd(b)
    if k == "SOFTMAX":
        tfl.SoftmaxOptionsStart(b)
        tfl.SoftmaxOptionsAddBeta(b, 1.0)
        return BO.SoftmaxOptions, tfl.SoftmaxOptionsEnd(b)
    return BO.NONE, None


def _buffer(b: flatbuffers.Builder, raw: bytes | None) -> int:
    data = None
    if raw:
        b.StartVector(1, len(raw), _ALIGN)
        b.head = b.head - len(raw)
        b.Bytes[b.head:b.head + len(raw)] = raw
        data = b.EndVector()
    tfl.BufferStart(b)
    if data is not None:
        tfl.BufferAddData(b, data)
    return tfl.BufferEnd(b)


def _offsets(b: flatbuffers.Builder, start, items: list[int]) -> int:
    start(b, len(items))
    for off in reversed(items):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _tensor(b: flatbuffers.Builder, t, buffer: int) -> int:
    batched = t.data is None  # activations: batch 1, -1 in the signature
    shape = b.CreateNumpyVector(np.array((1, *t.shape) if batched else t.shape, np.int32))
    name = b.CreateString(t.name)
    quant = None
    if t.quant is not None or t.data is not None:  # an int32 constant: empty parameters
        scale = zp = None
        if t.quant is not None:
            scale = b.CreateNumpyVector(np.asarray(t.quant.scale, np.float32))
            zp = b.CreateNumpyVector(np.asarray(t.quant.zero_point, np.int64))
        tfl.QuantizationParametersStart(b)
        if scale is not None:
            tfl.QuantizationParametersAddScale(b, scale)
            tfl.QuantizationParametersAddZeroPoint(b, zp)
            tfl.QuantizationParametersAddQuantizedDimension(b, t.quant.dim)
        quant = tfl.QuantizationParametersEnd(b)
    sig = b.CreateNumpyVector(np.array((-1, *t.shape), np.int32)) if batched else None
    tfl.TensorStart(b)
    tfl.TensorAddShape(b, shape)
    tfl.TensorAddType(b, TENSOR_TYPE_CODES[t.dtype])
    tfl.TensorAddBuffer(b, buffer)
    tfl.TensorAddName(b, name)
    if quant is not None:
        tfl.TensorAddQuantization(b, quant)
    if sig is not None:
        tfl.TensorAddShapeSignature(b, sig)
    tfl.TensorAddHasRank(b, True)
    return tfl.TensorEnd(b)


def write(g: Graph, metadata: dict[str, bytes] | None = None,
          description: str = "edgeeff synth") -> bytes:
    """The flatbuffer of ``g`` (one subgraph, the serving_default signature), with one metadata
    entry per item of ``metadata`` after ``min_runtime_version``.

    ``g``'s tensors carry their names, dtypes and quantisation; constants their ``data``; every
    op's ``operands`` list its TFLite inputs (``-1``: an omitted optional input), else its
    activation ``inputs`` are used.
    """
    order = tensor_order(g)
    new = {old: i for i, old in enumerate(order)}
    named = {"min_runtime_version": MIN_RUNTIME_VERSION.encode().ljust(16, b"\0")}
    named.update(metadata or {})
    total = sum(g.tensors[i].data.nbytes for i in order if g.tensors[i].data is not None)
    total += sum(len(v) for v in named.values())
    b = flatbuffers.Builder(total + 64 * len(order) + 256 * len(order) + 4096)

    codes: dict[str, int] = {}
    for op in g.ops:
        codes.setdefault(op.kind, len(codes))
    oc_offs = []
    for kind in codes:
        code = BUILTIN_CODES[kind]
        tfl.OperatorCodeStart(b)
        tfl.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tfl.OperatorCodeAddVersion(b, OP_VERSIONS[kind])
        tfl.OperatorCodeAddBuiltinCode(b, code)
        oc_offs.append(tfl.OperatorCodeEnd(b))
    op_codes = _offsets(b, tfl.ModelStartOperatorCodesVector, oc_offs)

    # the subgraph: tensors (buffer i + 1 for the i-th tensor), io, operators, name
    t_offs = [_tensor(b, g.tensors[old], i + 1) for i, old in enumerate(order)]
    tensors = _offsets(b, tfl.SubGraphStartTensorsVector, t_offs)
    sg_in = b.CreateNumpyVector(np.array([new[i] for i in g.inputs], np.int32))
    sg_out = b.CreateNumpyVector(np.array([new[i] for i in g.outputs], np.int32))
    o_offs = []
    for op in g.ops:
        ins = b.CreateNumpyVector(np.array(
            [new[i] if i >= 0 else -1 for i in (op.operands if op.operands is not None
                                                else op.inputs)], np.int32))
        outs = b.CreateNumpyVector(np.array([new[op.output]], np.int32))
        opt_type, opts = _options(b, op)
        tfl.OperatorStart(b)
        tfl.OperatorAddOpcodeIndex(b, codes[op.kind])
        tfl.OperatorAddInputs(b, ins)
        tfl.OperatorAddOutputs(b, outs)
        tfl.OperatorAddBuiltinOptionsType(b, opt_type)
        if opts is not None:
            tfl.OperatorAddBuiltinOptions(b, opts)
        o_offs.append(tfl.OperatorEnd(b))
    operators = _offsets(b, tfl.SubGraphStartOperatorsVector, o_offs)
    sg_name = b.CreateString("main")
    tfl.SubGraphStart(b)
    tfl.SubGraphAddTensors(b, tensors)
    tfl.SubGraphAddInputs(b, sg_in)
    tfl.SubGraphAddOutputs(b, sg_out)
    tfl.SubGraphAddOperators(b, operators)
    tfl.SubGraphAddName(b, sg_name)
    subgraphs = _offsets(b, tfl.ModelStartSubgraphsVector, [tfl.SubGraphEnd(b)])
    desc = b.CreateString(description)

    # buffers: the empty sentinel, one per tensor, one per metadata entry
    raws = [None] + [None if g.tensors[i].data is None
                     else np.ascontiguousarray(g.tensors[i].data).tobytes() for i in order]
    raws += list(named.values())
    buffers = _offsets(b, tfl.ModelStartBuffersVector, [_buffer(b, r) for r in raws])
    md_offs = []
    for j, name in enumerate(named):
        nm = b.CreateString(name)
        tfl.MetadataStart(b)
        tfl.MetadataAddName(b, nm)
        tfl.MetadataAddBuffer(b, len(order) + 1 + j)
        md_offs.append(tfl.MetadataEnd(b))
    meta = _offsets(b, tfl.ModelStartMetadataVector, md_offs)

    sig_io = []
    for nm, i, start in ((INPUT_NAME, g.inputs[0], tfl.SignatureDefStartInputsVector),
                         (OUTPUT_NAME, g.outputs[0], tfl.SignatureDefStartOutputsVector)):
        s = b.CreateString(nm)
        tfl.TensorMapStart(b)
        tfl.TensorMapAddName(b, s)
        tfl.TensorMapAddTensorIndex(b, new[i])
        sig_io.append(_offsets(b, start, [tfl.TensorMapEnd(b)]))
    sig_in, sig_out = sig_io
    key = b.CreateString(SIGNATURE_KEY)
    tfl.SignatureDefStart(b)
    tfl.SignatureDefAddInputs(b, sig_in)
    tfl.SignatureDefAddOutputs(b, sig_out)
    tfl.SignatureDefAddSignatureKey(b, key)
    tfl.SignatureDefAddSubgraphIndex(b, 0)
    sigs = _offsets(b, tfl.ModelStartSignatureDefsVector, [tfl.SignatureDefEnd(b)])

    tfl.ModelStart(b)
    tfl.ModelAddVersion(b, SCHEMA_VERSION)
    tfl.ModelAddOperatorCodes(b, op_codes)
    tfl.ModelAddSubgraphs(b, subgraphs)
    tfl.ModelAddDescription(b, desc)
    tfl.ModelAddBuffers(b, buffers)
    tfl.ModelAddMetadata(b, meta)
    tfl.ModelAddSignatureDefs(b, sigs)
    b.Finish(tfl.ModelEnd(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())

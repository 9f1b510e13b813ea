"""The int8 TFLite flatbuffer of a spec, written without TensorFlow (random, plausible weights).

``edgeeff export --int8`` builds the Keras model, converts it and quantises it (10-30 s, and
TensorFlow). For latency work only the graph matters: which ops run in which order, on which
shapes, with which kernels, fused activations and quantisation *types* (the runtime picks its
kernels from those, never from the weight values). :func:`build` writes that graph directly
from :func:`edgeeff.core.cost.graph` with the flatbuffers object API of the schema that ships
with the runtime (``ai_edge_litert.schema_py_generated``) -- numpy and flatbuffers only, so it
runs on the device (``edgeeff profile``) in milliseconds.

What it mirrors from the exporter's ``model_int8.tflite`` (checked op by op and tensor by tensor
against real exports in tests/test_synth.py):

* ops in the same order, op codes in order of first use with the converter's versions
  (``CONV_2D``/``DEPTHWISE_CONV_2D`` v3: int8 per-channel);
* uint8 input of raw pixels -> ``DEQUANTIZE`` to float32 -> ``QUANTIZE`` to int8 (the CPU form,
  see :mod:`edgeeff.core.cost`; ``form="converter"``: one ``QUANTIZE``), lite: scale 1/128,
  zero point 127, the normalisation folded in; efficientnet: scale 1, then ``MUL``/``ADD`` by
  per-channel int8 constants for the normalisation; uint8 softmax output after a final
  ``QUANTIZE``; with ``io="int8"`` the int8 input (zero point - 128) and the int8 softmax are
  the model's input and output;
* convolutions with TF "same" padding, RELU6 fused (lite), swish as ``LOGISTIC`` + ``MUL``;
  squeeze-excite as ``MEAN`` (keep_dims) + 1x1 convs + ``LOGISTIC`` + broadcast ``MUL``; the
  head's ``MEAN`` without keep_dims feeding ``FULLY_CONNECTED`` a ``[1, C]`` tensor;
* int8 per-channel symmetric weights (conv: ``[O, k, k, I]``, quantised dimension 0;
  depthwise: ``[1, k, k, C]``, dimension 3; dense: ``[N, C]``, dimension 0), int32 biases with
  scale ``input_scale * weight_scale``, per-tensor int8 activations; ``LOGISTIC`` and
  ``SOFTMAX`` outputs at scale 1/256, zero point -128 as TFLite's int8 kernels require;
* batch 1 with a ``-1`` batch in each activation's shape signature, the ``serving_default``
  signature (``image`` -> ``output_0``), the ``min_runtime_version`` metadata.

The dense layer has no bias tensor by default, as in exports of untrained (``--weights none``)
models, where the converter drops the all-zero bias; ``fc_bias=True`` adds one (trained models).

Activation ranges follow a unit-variance model of a batch-normalised network (convolution
outputs about +-4, ReLU6 outputs 0..6, swish outputs -0.28..4) and every weight scale is set
so that its output keeps that variance: nothing saturates, and every op meets the same
requantisation limits (XNNPACK's included) as a calibrated export, so the runtime takes the
same kernels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from edgeeff.core import cost
from edgeeff.core.arch import FAMILIES, ModelSpec, expand
from edgeeff.device import tflite_graph

# Op versions the converter writes for these int8 graphs (TF 2.16-2.21).
OP_VERSIONS = {
    "DEQUANTIZE": 1, "QUANTIZE": 1, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "ADD": 2, "MUL": 2, "LOGISTIC": 2,
    "MEAN": 2, "FULLY_CONNECTED": 4, "SOFTMAX": 2,
}
MIN_RUNTIME_VERSION = "1.14.0"
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "output_0"
_SIGMA_Q = 127.0 / math.sqrt(3.0)  # std of int8 weights drawn uniformly from -127..127


def _schema():
    return tflite_graph.schema()


# --------------------------------------------------------------------------- graph description


@dataclass
class STensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "int8"  # int8, uint8, int32, float32
    scale: np.ndarray | None = None  # per-tensor (1,) or per-channel (C,)
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constants only
    batch: bool = True  # activation with a -1 batch in its shape signature
    rms: float = 1.0  # nominal float RMS of an activation (sets the next weight scales)


@dataclass
class SOp:
    kind: str
    name: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class SGraph:
    """A TFLite subgraph being laid out: tensors, ops, graph inputs and outputs."""

    tensors: list[STensor] = field(default_factory=list)
    ops: list[SOp] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def add(self, t: STensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1


def _range_q(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """int8 asymmetric per-tensor quantisation of the float range [lo, hi] (0 inside)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(round(-128.0 - lo / float(scale)), -128, 127))
    return np.array([scale], np.float32), np.array([zp], np.int64)


# float range and RMS of an activation by what produced it (unit-variance pre-activations)
RANGES = {
    "linear": (-4.0, 4.0, 1.0),  # conv / depthwise output, no activation
    "relu6": (0.0, 6.0, 0.7),
    "swish": (-0.2785, 4.0, 0.6),  # x * sigmoid(x) over [-4, 4]
    "sigmoid": (0.0, 255.0 / 256.0, 0.5),  # fixed by TFLite: scale 1/256, zero point -128
    "residual": (-6.0, 6.0, 1.4),
    "logits": (-8.0, 8.0, 2.0),
}


class _Synth:
    def __init__(self, spec: ModelSpec, seed: int, fc_bias: bool, io: str = "uint8",
                 form: str = "cpu"):
        self.spec, self.io, self.form = spec, io, form
        self.arch = expand(spec)
        self.rng = np.random.default_rng(seed)
        self.fc_bias = fc_bias
        self.g = SGraph()
        self.prefix = spec.name.replace("+", "p").replace("-", "_").replace(".", "_")
        self.layers: dict[str, tuple[int, int]] = {"stem_conv": (3, 2)}
        for b in self.arch.blocks:
            self.layers[b.name + "_dwconv"] = (b.kernel, b.stride)
        self.relu6 = self.arch.activation == "relu6"
        self.axes: int | None = None

    # ---------------------------------------------------------------- tensors
    def act(self, name: str, shape: tuple[int, ...], kind: str) -> int:
        lo, hi, rms = RANGES[kind]
        if kind == "sigmoid":
            scale, zp = np.array([1.0 / 256.0], np.float32), np.array([-128], np.int64)
        else:
            scale, zp = _range_q(lo, hi)
        return self.g.add(STensor(f"{self.prefix}/{name}", (1, *shape), "int8", scale, zp,
                                  rms=rms))

    def like(self, name: str, src: int) -> int:
        """An activation with ``src``'s shape and quantisation (MEAN keeps the scale)."""
        s = self.g.tensors[src]
        return self.g.add(STensor(f"{self.prefix}/{name}", s.shape, s.dtype, s.scale.copy(),
                                  s.zero_point.copy(), rms=s.rms))

    def weights(self, name: str, shape: tuple[int, ...], qdim: int, fan_in: int, in_rms: float,
                out_rms: float = 1.0) -> int:
        n_ch = shape[qdim]
        n = int(np.prod(shape))  # uniform int8, -128 folded onto -127 (symmetric range)
        data = np.maximum(np.frombuffer(self.rng.bytes(n), np.int8), np.int8(-127))
        gain = out_rms / (math.sqrt(fan_in) * max(in_rms, 1e-3) * _SIGMA_Q)
        scale = (gain * np.exp(self.rng.normal(0.0, 0.15, n_ch))).astype(np.float32)
        return self.g.add(STensor(f"{self.prefix}/{name}", shape, "int8", scale,
                                  np.zeros(n_ch, np.int64), qdim, data, batch=False))

    def bias(self, name: str, x: int, w: int) -> int:
        in_scale = self.g.tensors[x].scale[0]
        w_scale = self.g.tensors[w].scale
        scale = (np.float32(in_scale) * w_scale).astype(np.float32)
        n = len(w_scale)
        q = np.round(self.rng.normal(0.0, 0.1, n) / scale.astype(np.float64))
        data = np.clip(q, -2**31, 2**31 - 1).astype("<i4")
        return self.g.add(STensor(f"{self.prefix}/{name}", (n,), "int32", scale,
                                  np.zeros(n, np.int64), 0, data, batch=False))

    def const_vec(self, name: str, values, dtype: str) -> int:
        v = np.asarray(values, np.float64)
        if dtype == "int32":
            return self.g.add(STensor(name, v.shape, "int32", data=v.astype("<i4"), batch=False))
        scale, zp = _range_q(v.min(), v.max())
        q = np.clip(np.round(v / scale[0]) + zp[0], -128, 127).astype(np.int8)
        return self.g.add(STensor(f"{self.prefix}/{name}", v.shape, "int8", scale, zp, 0, q,
                                  batch=False))

    def op(self, kind: str, name: str, inputs: list[int], out: int, **options) -> int:
        self.g.ops.append(SOp(kind, name, inputs, [out], options))
        return out

    # ---------------------------------------------------------------- the graph
    def build(self, n_ops: int | None = None) -> SGraph:
        g, cg = self.g, cost.graph(self.arch, self.io, self.form)
        fam = FAMILIES[self.spec.family]
        ops = cg.ops if n_ops is None else cg.ops[:n_ops]
        t_of: dict[int, int] = {}  # cost tensor -> synth tensor
        r = self.spec.resolution
        lite_input = self.spec.family == "lite"
        in_scale, in_zp = (1.0 / 128.0, 127) if lite_input else (1.0, 0)
        if self.io == "int8":  # the int8 tensor the QUANTIZE would have written
            in_zp -= 128
        self.input_q = (np.array([in_scale], np.float32), np.array([in_zp], np.int64))
        x = g.add(STensor(f"{SIGNATURE_KEY}_{INPUT_NAME}:0", (1, r, r, 3), self.io,
                          *self.input_q, rms=1.0 if self.spec.family != "lite" else 0.5))
        g.inputs = [x]
        t_of[0] = x
        for i, op in enumerate(ops):
            ins = [t_of[t] for t in op.inputs]
            shape = cg.shape(op.output)
            last = n_ops is None and i == len(ops) - 1
            t_of[op.output] = self._op(op, ins, shape, fam, last)
        out = t_of[ops[-1].output] if ops else x
        g.outputs = [out]
        return g

    def _op(self, op: cost.Op, ins: list[int], shape: tuple[int, ...], fam, last: bool) -> int:
        g, k = self.g, op.kind
        name = op.name
        if k == "DEQUANTIZE":  # uint8 model input -> float32 (the CPU form)
            src = g.tensors[ins[0]]
            return self.op(k, name, ins, g.add(STensor("image_float", src.shape, "float32")))
        if k == "QUANTIZE":
            src = g.tensors[ins[0]]
            if src.dtype in ("uint8", "float32"):  # model input -> int8, zero point - 128
                scale, zp = self.input_q
                out = g.add(STensor("tfl.quantize", src.shape, "int8", scale.copy(), zp - 128,
                                    rms=1.0 if self.spec.family != "lite" else 0.5))
            else:  # softmax -> uint8 model output
                out = g.add(STensor(f"StatefulPartitionedCall:{0 if last else 1}", src.shape,
                                    "uint8", src.scale.copy(), src.zero_point + 128))
            return self.op(k, name, ins, out)
        if name in ("normalization_mul", "normalization"):  # efficientnet input normalisation
            mean, std = np.array(fam.mean), np.array(fam.std)
            if name == "normalization_mul":
                c = self.const_vec("normalization/Cast/x", 1.0 / (255.0 * std), "int8")
                lo, hi = float((-mean / std).min()), float((1.0 / std).max())
                kind = "MUL"
            else:
                c = self.const_vec("normalization/Cast_1/x", -mean / std, "int8")
                lo, hi = float((-mean / std).min()), float(((1.0 - mean) / std).max())
                kind = "ADD"
            scale, zp = _range_q(lo, hi)
            out = g.add(STensor(f"{self.prefix}/{name}", (1, *shape), "int8", scale, zp,
                                rms=1.0))
            opts = {"potScaleInt16": True} if kind == "ADD" else {}
            return self.op(kind, name, [ins[0], c], out, **opts)
        if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x = ins[0]
            cin = g.tensors[x].shape[-1]
            kernel, stride = self.layers.get(name, (1, 1))
            fused = self.relu6 and not name.endswith(("project_conv", "se_reduce", "se_expand"))
            in_rms = g.tensors[x].rms
            if k == "CONV_2D":
                w = self.weights(name + "/convolution", (shape[-1], kernel, kernel, cin), 0,
                                 kernel * kernel * cin, in_rms)
            else:
                w = self.weights(name + "/depthwise", (1, kernel, kernel, cin), 3,
                                 kernel * kernel, in_rms)
            b = self.bias(name + "/bias", x, w)
            out = self.act(name, shape, "relu6" if fused else "linear")
            opts = {"stride": stride, "fused": "RELU6" if fused else "NONE"}
            return self.op(k, name, [x, w, b], out, **opts)
        if k == "LOGISTIC":
            return self.op(k, name, ins, self.act(name, shape, "sigmoid"))
        if k == "MUL":  # swish x * sigmoid(x), or squeeze-excite x * sigmoid(s): x's range
            return self.op(k, name, ins, self.act(name, shape, "swish"))
        if k == "ADD":
            return self.op(k, name, ins, self.act(name, shape, "residual"), potScaleInt16=True)
        if k == "MEAN":
            x = ins[0]
            if self.axes is None:  # one [1, 2] constant shared by every MEAN, as converted
                self.axes = self.const_vec(f"{self.prefix}/{name}/reduction_indices", [1, 2],
                                           "int32")
            axes = self.axes
            keep = len(shape) == 3
            src = g.tensors[x]
            if keep:  # squeeze-excite: a smaller range than its input
                lo, hi, _ = RANGES["swish"]
                scale, zp = _range_q(lo, hi / 2)
                out = g.add(STensor(f"{self.prefix}/{name}", (1, *shape), "int8", scale, zp,
                                    rms=src.rms))
            else:  # global average pool: the input's quantisation
                out = g.add(STensor(f"{self.prefix}/{name}", (1, *shape), "int8",
                                    src.scale.copy(), src.zero_point.copy(), rms=src.rms))
            return self.op(k, name, [x, axes], out, keepDims=keep)
        if k == "FULLY_CONNECTED":
            x = ins[0]
            n, c = shape[-1], g.tensors[x].shape[-1]
            w = self.weights(name + "/MatMul", (n, c), 0, c, g.tensors[x].rms,
                             out_rms=RANGES["logits"][2])
            b = self.bias(name + "/BiasAdd", x, w) if self.fc_bias else -1
            out = self.act(name, shape, "logits")
            return self.op(k, name, [x, w, b], out)
        if k == "SOFTMAX":
            return self.op(k, name, ins, self.act(name, shape, "sigmoid"), beta=1.0)
        raise ValueError(f"no synthesis rule for op {k} ({name})")


# --------------------------------------------------------------------------- flatbuffer


def _buffer_class(s):
    class AlignedBuffer(s.BufferT):
        """A buffer whose data starts on a 16-byte boundary, as the converter writes them."""

        def Pack(self, builder):
            data = None
            if self.data is not None and len(self.data):
                raw = self.data.tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                data = builder.EndVector()
            s.BufferStart(builder)
            if data is not None:
                s.BufferAddData(builder, data)
            return s.BufferEnd(builder)

    return AlignedBuffer


def _options(s, op: SOp):
    """(BuiltinOptions type, options object) as the converter writes them."""
    BO, AF = s.BuiltinOptions, s.ActivationFunctionType
    k, o = op.kind, op.options
    if k == "CONV_2D":
        opt = s.Conv2DOptionsT()
        opt.padding = s.Padding.SAME
        opt.strideH = opt.strideW = o["stride"]
        opt.fusedActivationFunction = getattr(AF, o["fused"])
        return BO.Conv2DOptions, opt
    if k == "DEPTHWISE_CONV_2D":
        opt = s.DepthwiseConv2DOptionsT()
        opt.padding = s.Padding.SAME
        opt.strideH = opt.strideW = o["stride"]
        opt.depthMultiplier = 1
        opt.fusedActivationFunction = getattr(AF, o["fused"])
        return BO.DepthwiseConv2DOptions, opt
    if k == "ADD":
        opt = s.AddOptionsT()
        opt.potScaleInt16 = True
        return BO.AddOptions, opt
    if k == "MUL":
        return BO.MulOptions, s.MulOptionsT()
    if k == "MEAN":
        opt = s.ReducerOptionsT()
        opt.keepDims = bool(o["keepDims"])
        return BO.ReducerOptions, opt
    if k == "FULLY_CONNECTED":
        return BO.FullyConnectedOptions, s.FullyConnectedOptionsT()
    if k == "SOFTMAX":
        opt = s.SoftmaxOptionsT()
        opt.beta = 1.0
        return BO.SoftmaxOptions, opt
    return BO.NONE, None


def _tensor_order(g: SGraph) -> list[int]:
    """The converter's tensor table order: the input, the constants (last layer first), then the
    activations in execution order."""
    consts = [i for i, t in enumerate(g.tensors) if t.data is not None]
    acts = [i for i, t in enumerate(g.tensors) if t.data is None and i not in g.inputs]
    return list(g.inputs) + consts[::-1] + acts


def serialize(g: SGraph, metadata: dict[str, bytes] | None = None,
              description: str = "edgeeff synth") -> bytes:
    """The flatbuffer of ``g`` (one subgraph, the serving_default signature)."""
    import flatbuffers

    s = _schema()
    Buffer = _buffer_class(s)
    order = _tensor_order(g)
    new = {old: i for i, old in enumerate(order)}
    types = {"int8": s.TensorType.INT8, "uint8": s.TensorType.UINT8,
             "int32": s.TensorType.INT32, "float32": s.TensorType.FLOAT32}

    m = s.ModelT()
    m.version = 3
    m.description = description
    m.buffers = [Buffer()]  # buffer 0: the empty sentinel
    sg = s.SubGraphT()
    sg.name = "main"
    sg.tensors = []
    total = 0
    for old in order:
        t = g.tensors[old]
        tt = s.TensorT()
        tt.name = t.name
        tt.shape = np.array(t.shape, np.int32)
        if t.batch:
            tt.shapeSignature = np.array((-1, *t.shape[1:]), np.int32)
        tt.type = types[t.dtype]
        buf = Buffer()
        if t.data is not None:
            buf.data = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
            total += buf.data.size
        m.buffers.append(buf)
        tt.buffer = len(m.buffers) - 1
        if t.scale is None and t.data is not None:  # an int32 constant: empty parameters
            tt.quantization = s.QuantizationParametersT()
        elif t.scale is not None:
            q = s.QuantizationParametersT()
            q.scale = np.asarray(t.scale, np.float32)
            q.zeroPoint = np.asarray(t.zero_point, np.int64)
            q.quantizedDimension = t.quantized_dimension
            tt.quantization = q
        tt.hasRank = True
        sg.tensors.append(tt)

    codes: dict[str, int] = {}
    m.operatorCodes = []
    sg.operators = []
    for op in g.ops:
        if op.kind not in codes:
            oc = s.OperatorCodeT()
            code = getattr(s.BuiltinOperator, op.kind)
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = OP_VERSIONS[op.kind]
            codes[op.kind] = len(m.operatorCodes)
            m.operatorCodes.append(oc)
        o = s.OperatorT()
        o.opcodeIndex = codes[op.kind]
        o.inputs = np.array([new[i] if i >= 0 else -1 for i in op.inputs], np.int32)
        o.outputs = np.array([new[i] for i in op.outputs], np.int32)
        o.builtinOptionsType, o.builtinOptions = _options(s, op)
        sg.operators.append(o)
    sg.inputs = np.array([new[i] for i in g.inputs], np.int32)
    sg.outputs = np.array([new[i] for i in g.outputs], np.int32)
    m.subgraphs = [sg]

    sig = s.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs, sig.outputs = [], []
    for names, idx, dest in (([INPUT_NAME], g.inputs, sig.inputs),
                             ([OUTPUT_NAME], g.outputs, sig.outputs)):
        for nm, i in zip(names, idx):
            tm = s.TensorMapT()
            tm.name = nm
            tm.tensorIndex = new[i]
            dest.append(tm)
    m.signatureDefs = [sig]

    m.metadata = []
    named = {"min_runtime_version": MIN_RUNTIME_VERSION.encode().ljust(16, b"\0")}
    named.update(metadata or {})
    tflite_graph.append_metadata(m, named, Buffer)

    b = flatbuffers.Builder(total + 64 * len(m.buffers) + 256 * len(sg.tensors) + 4096)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# --------------------------------------------------------------------------- public API


def layout(spec: ModelSpec, seed: int = 0, fc_bias: bool = False,
           n_ops: int | None = None, io: str = "uint8", form: str = "cpu") -> SGraph:
    """The synthetic graph of ``spec`` (tensors with data and quantisation, ops with options).

    ``n_ops``: keep only the first ``n_ops`` ops of the export's graph; the last one's (int8)
    output becomes the model output (a prefix of the network, for profiling). ``io`` and
    ``form``: as :func:`edgeeff.core.cost.graph`.
    """
    return _Synth(spec, seed, fc_bias, io, form).build(n_ops)


def build(spec: ModelSpec, seed: int = 0, fc_bias: bool = False, n_ops: int | None = None,
          metadata: bool = True, io: str = "uint8", form: str = "cpu") -> bytes:
    """The full-integer .tflite flatbuffer ``edgeeff export --int8 --io {io}`` writes for
    ``spec`` (``form="converter"``: the graph its tflm and edgetpu formats start from), with
    seeded random int8 weights (see the module docstring for what is mirrored)."""
    g = layout(spec, seed, fc_bias, n_ops, io, form)
    named = {}
    if metadata:
        from edgeeff.core.artifacts import METADATA_NAME
        from edgeeff.core.preprocess import Preprocessor

        pp = Preprocessor.for_spec(spec, normalized=Preprocessor.folds_into_input(spec))
        named[METADATA_NAME] = json.dumps({
            "name": spec.name, "producer": "edgeeff.device.synth",
            "synthetic": f"random int8 weights (seed {seed}): for latency and memory "
                         "measurements only, predictions are meaningless",
            "spec": spec.to_dict(), "input": pp.to_dict(), "labels": None,
            "n_ops": n_ops,
        }, separators=(",", ":")).encode()
    return serialize(g, named)

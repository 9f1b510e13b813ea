"""Analytic cost of a spec: multiply-adds, parameters, int8 flash and peak activation RAM.

Pure Python. The network is laid out as the int8 TFLite graph the exporter produces (BatchNorm
folded into convolutions, ReLU6 fused, swish as LOGISTIC + MUL, squeeze-excite as MEAN, two 1x1
convolutions, LOGISTIC and a broadcast MUL), one :class:`Op` per kernel in execution order. From
that one list we get:

* ``macs``: multiply-adds of conv, depthwise and dense layers (the paper's "FLOPs");
* ``params``: trainable parameters of the Keras model (BatchNorm gamma/beta counted, moving
  statistics and normalisation constants not), the paper's and Keras' convention;
* ``flash_bytes``: int8 weights + int32 biases + per-channel quantisation parameters + a fixed
  per-tensor flatbuffer overhead (constants calibrated against the converter; see issue notes);
* ``peak_ram_bytes``: the largest total size of int8 activation tensors alive at once when the
  ops run in order, each tensor living from its producer to its last consumer (skip connections
  therefore stay alive across their block), the uint8 input included.

Two I/O types (``io``): ``uint8`` (raw pixels in, uint8 softmax out: MediaPipe's and Coral's
convention, the default) and ``int8`` (int8 in and out, no conversion ops at all). And two forms
of a uint8 graph (``form``):

* ``"cpu"`` (``model_int8.tflite``): the uint8 -> int8 input conversion is a ``DEQUANTIZE``
  (uint8 -> float32) and a ``QUANTIZE`` (float32 -> int8). XNNPACK runs both, vectorised and
  threaded; TFLite's own uint8 -> int8 ``QUANTIZE`` kernel is scalar outside ARM NEON and took
  3 % of Lite0's latency on x86 (issue 11). The outputs are bit-identical.
* ``"converter"``: the converter's single ``QUANTIZE``, for TFLite Micro (no float tensor in the
  arena) and the Edge TPU compiler (which maps ops only up to the first one it cannot run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeeff.core.arch import Architecture, ModelSpec, expand, feature_size

# Flatbuffer bookkeeping, calibrated on models written by TFLiteConverter (tests keep these honest).
FLASH_PER_TENSOR = 180  # tensor table entry, name string, buffer entry
FLASH_PER_OP = 64  # operator entry with options and index vectors
FLASH_PER_CHANNEL_QUANT = 21  # weight + bias scales and zero points per output channel, as stored
FLASH_FIXED = 4096  # header, op-code table, signature, metadata

IO_TYPES = ("uint8", "int8")  # model input and output type (export --io)
FORMS = ("cpu", "converter")  # how a uint8 input becomes int8 (see the module docstring)

# TensorFlow Lite Micro's own arena use next to the activations ("tail" of the arena), fitted to
# tflite-micro's RecordingMicroAllocator on a 64-bit host (benchmarks/mcu_ram.py re-measures it):
TFLM_PER_TENSOR = 24  # TfLiteEvalTensor, one per tensor in the flatbuffer
TFLM_PER_OP = 165  # NodeAndRegistration (64) + kernel op data (~77) + graph bookkeeping (~24)
TFLM_PER_CHANNEL = 8  # conv/depthwise/dense per-channel output multiplier + shift (2 x int32)
TFLM_FIXED = 716  # persistent input/output TfLiteTensors, their quantization, subgraph structs


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    itemsize: int = 1  # int8 activations

    @property
    def nbytes(self) -> int:
        n = self.itemsize
        for d in self.shape:
            n *= d
        return n


@dataclass
class Op:
    name: str  # Keras layer name it comes from
    kind: str  # TFLite builtin it lowers to
    inputs: list[int]
    output: int
    macs: int = 0
    params: int = 0  # trainable parameters of the Keras layer(s)
    weights: int = 0  # int8 weight elements after folding
    biases: int = 0  # int32 bias elements after folding
    stage: str = "stem"
    consts: int = 0  # constant tensors in the flatbuffer (weights, biases, scalars)


@dataclass
class Graph:
    tensors: list[Tensor] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)

    def tensor(self, name: str, shape: tuple[int, ...], itemsize: int = 1) -> int:
        self.tensors.append(Tensor(name, shape, itemsize))
        return len(self.tensors) - 1

    def shape(self, t: int) -> tuple[int, ...]:
        return self.tensors[t].shape

    def add(self, name: str, kind: str, inputs: list[int], out_shape: tuple[int, ...], stage: str,
            **costs: int) -> int:
        out = self.tensor(name, out_shape)
        self.ops.append(Op(name, kind, inputs, out, stage=stage, **costs))
        return out


class _Builder:
    """Lays out the int8 graph of an :class:`Architecture`."""

    def __init__(self, arch: Architecture, io: str = "uint8", form: str = "cpu"):
        if io not in IO_TYPES:
            raise ValueError(f"io must be one of {', '.join(IO_TYPES)}, got {io!r}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
        self.arch, self.io, self.form = arch, io, form
        self.g = Graph()
        self.stage = "stem"

    def conv(self, name: str, x: int, filters: int, kernel: int = 1, stride: int = 1,
             bias: bool = False, bn: bool = True) -> int:
        h, w, c = self.g.shape(x)
        ho, wo = feature_size(h, stride), feature_size(w, stride)
        k = kernel * kernel * c * filters
        params = k + (filters if bias else 0) + (2 * filters if bn else 0)
        return self.g.add(name, "CONV_2D", [x], (ho, wo, filters), self.stage,
                          macs=ho * wo * k, params=params, weights=k, biases=filters, consts=2)

    def dwconv(self, name: str, x: int, kernel: int, stride: int) -> int:
        h, w, c = self.g.shape(x)
        ho, wo = feature_size(h, stride), feature_size(w, stride)
        k = kernel * kernel * c
        return self.g.add(name, "DEPTHWISE_CONV_2D", [x], (ho, wo, c), self.stage,
                          macs=ho * wo * k, params=k + 2 * c, weights=k, biases=c, consts=2)

    def act(self, name: str, x: int) -> int:
        if self.arch.activation == "relu6":
            return x  # fused into the producing convolution
        s = self.g.add(name + "_sigmoid", "LOGISTIC", [x], self.g.shape(x), self.stage)
        return self.g.add(name, "MUL", [x, s], self.g.shape(x), self.stage)

    def se(self, prefix: str, x: int, filters_se: int) -> int:
        h, w, c = self.g.shape(x)
        s = self.g.add(prefix + "se_squeeze", "MEAN", [x], (1, 1, c), self.stage)
        s = self.conv(prefix + "se_reduce", s, filters_se, bias=True, bn=False)
        s = self.act(prefix + "se_reduce_activation", s)
        s = self.conv(prefix + "se_expand", s, c, bias=True, bn=False)
        s = self.g.add(prefix + "se_expand_sigmoid", "LOGISTIC", [s], (1, 1, c), self.stage)
        return self.g.add(prefix + "se_excite", "MUL", [x, s], (h, w, c), self.stage)

    def build(self) -> Graph:
        a, g = self.arch, self.g
        r = a.spec.resolution
        x = g.tensor("input", (r, r, 3))
        if self.io == "uint8":
            if self.form == "cpu":  # uint8 -> float32 -> int8, both in XNNPACK
                x = g.add("input_dequantize", "DEQUANTIZE", [x], (r, r, 3), "stem")
                g.tensors[x].itemsize = 4
            x = g.add("input_quantize", "QUANTIZE", [x], (r, r, 3), "stem")
        if a.family.name != "lite":  # per-channel normalisation stays in the graph
            x = g.add("normalization_mul", "MUL", [x], (r, r, 3), "stem", consts=1)
            x = g.add("normalization", "ADD", [x], (r, r, 3), "stem", consts=1)
        x = self.conv("stem_conv", x, a.stem_filters, kernel=3, stride=2)
        x = self.act("stem_activation", x)
        for b in a.blocks:
            self.stage = f"stage{b.stage}"
            p = b.name + "_"
            inp = x
            if b.expand_ratio != 1:
                x = self.conv(p + "expand_conv", x, b.expanded)
                x = self.act(p + "expand_activation", x)
            x = self.dwconv(p + "dwconv", x, b.kernel, b.stride)
            x = self.act(p + "activation", x)
            if b.se_filters:
                x = self.se(p, x, b.se_filters)
            x = self.conv(p + "project_conv", x, b.filters_out)
            if b.residual:
                x = g.add(p + "add", "ADD", [x, inp], g.shape(x), self.stage)
        self.stage = "head"
        x = self.conv("top_conv", x, a.top_filters)
        x = self.act("top_activation", x)
        c = g.shape(x)[2]
        x = g.add("avg_pool", "MEAN", [x], (c,), "head")
        n = a.spec.num_classes
        x = g.add("predictions", "FULLY_CONNECTED", [x], (n,), "head", macs=c * n,
                  params=c * n + n, weights=c * n, biases=n, consts=2)
        x = g.add("predictions_softmax", "SOFTMAX", [x], (n,), "head")
        if self.io == "uint8":
            g.add("output_quantize", "QUANTIZE", [x], (n,), "head")  # int8 -> uint8 output
        return g


def graph(spec_or_arch: ModelSpec | Architecture, io: str = "uint8", form: str = "cpu") -> Graph:
    """The int8 graph ``export --int8 --io {io}`` writes: ``form="cpu"`` is model_int8.tflite,
    ``"converter"`` the graph given to TFLite Micro and the Edge TPU compiler."""
    arch = spec_or_arch if isinstance(spec_or_arch, Architecture) else expand(spec_or_arch)
    return _Builder(arch, io, form).build()


def live_bytes(g: Graph) -> list[int]:
    """Bytes of activation tensors alive during each op (inputs, output and anything used later)."""
    last_use = {i: -1 for i in range(len(g.tensors))}
    produced_at = {0: -1}  # the model input exists before the first op
    for i, op in enumerate(g.ops):
        produced_at[op.output] = i
        for t in op.inputs:
            last_use[t] = max(last_use[t], i)
    last_op = len(g.ops) - 1
    last_use[g.ops[-1].output] = last_op  # the model output stays
    out = []
    for i in range(len(g.ops)):
        out.append(sum(g.tensors[t].nbytes for t, p in produced_at.items()
                       if p <= i and last_use[t] >= i))
    return out


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int
    flash_bytes: int
    peak_ram_bytes: int  # int8 activations alive at once (what TFLite's arena holds)
    peak_ram_op: str
    tflm_arena_bytes: int  # activations + TensorFlow Lite Micro's structs and kernel data

    @property
    def mflops(self) -> float:
        return self.macs / 1e6


def flash_bytes(g: Graph) -> int:
    weights = sum(op.weights for op in g.ops)
    biases = sum(op.biases for op in g.ops)
    # per-channel quantisation parameters of every weight and bias tensor
    quant = biases * FLASH_PER_CHANNEL_QUANT
    n_tensors = len(g.tensors) + sum(op.consts for op in g.ops)
    return (weights + 4 * biases + quant + FLASH_PER_TENSOR * n_tensors
            + FLASH_PER_OP * len(g.ops) + FLASH_FIXED)


def tflm_overhead_bytes(g: Graph) -> int:
    """TFLM's arena use beyond activations (tensor/node structs, per-channel kernel data)."""
    n_tensors = len(g.tensors) + sum(op.consts for op in g.ops)
    channels = sum(op.biases for op in g.ops
                   if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"))
    return (TFLM_PER_TENSOR * n_tensors + TFLM_PER_OP * len(g.ops)
            + TFLM_PER_CHANNEL * channels + TFLM_FIXED)


def cost(spec: ModelSpec, io: str = "uint8") -> Cost:
    """Costs of the CPU model; the TFLite Micro arena of the converter's graph (what
    ``--format tflm`` ships, with no float input tensor)."""
    arch = expand(spec)
    g = graph(arch, io)
    live = live_bytes(g)
    i = max(range(len(live)), key=live.__getitem__)
    tg = graph(arch, io, "converter")
    return Cost(
        macs=sum(op.macs for op in g.ops),
        params=sum(op.params for op in g.ops),
        flash_bytes=flash_bytes(g),
        peak_ram_bytes=live[i],
        peak_ram_op=g.ops[i].name,
        tflm_arena_bytes=max(live_bytes(tg)) + tflm_overhead_bytes(tg),
    )


def stage_table(spec: ModelSpec) -> list[dict]:
    """Per-stage totals (stem, stage1..7, head) for reports."""
    g = graph(spec)
    live = live_bytes(g)
    rows: dict[str, dict] = {}
    for op, lb in zip(g.ops, live):
        row = rows.setdefault(op.stage, {"stage": op.stage, "ops": 0, "macs": 0, "params": 0,
                                         "peak_ram_bytes": 0, "output_shape": None})
        row["ops"] += 1
        row["macs"] += op.macs
        row["params"] += op.params
        row["peak_ram_bytes"] = max(row["peak_ram_bytes"], lb)
        if op.kind != "SOFTMAX":
            row["output_shape"] = g.shape(op.output)
    return list(rows.values())

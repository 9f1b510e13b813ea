"""The int8 graph of a model, op by op: the one description that costs and latencies are summed
over, that the synthetic-model writer writes and that a real ``.tflite`` is read back into.

:func:`graph` lays the expanded architecture (:func:`edgeeff.core.arch.expand`, shared with the
Keras builder) out as the int8 TFLite graph the exporter produces: BatchNorm folded into the
convolutions, ReLU6 fused into them, swish as ``LOGISTIC`` + ``MUL``, squeeze-excite as ``MEAN``,
two 1x1 convolutions, ``LOGISTIC`` and a broadcast ``MUL``. Every :class:`Op` carries what the
runtime sees (builtin, kernel, stride, padding, fused activation, keep_dims, tensor shapes and
dtypes) and what it is for (its ``role`` and the Keras layer it comes from), so nothing
downstream has to guess from names.

It also holds the one rule for the model's ends (``io`` and ``form``):

* ``io="uint8"`` (raw pixels in, uint8 softmax out: MediaPipe's and Coral's convention) or
  ``"int8"`` (int8 in and out, no conversion ops);
* ``form="cpu"`` (``model_int8.tflite``): a uint8 input becomes int8 through float32, a
  ``DEQUANTIZE`` and a ``QUANTIZE``, which XNNPACK runs vectorised and threaded (TFLite's own
  uint8 -> int8 ``QUANTIZE`` kernel is scalar outside ARM NEON); the outputs are bit-identical;
* ``form="converter"``: the converter's single uint8 -> int8 ``QUANTIZE``, for TensorFlow Lite
  Micro (no float tensor in the arena) and the Edge TPU compiler (which maps ops only up to the
  first one it cannot run).

Pure: standard library and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgeeff.core.arch import Architecture, ModelSpec, expand, feature_size

IO_TYPES = ("uint8", "int8")  # model input and output type (export --io)
FORMS = ("cpu", "converter")  # how a uint8 input becomes int8 (see the module docstring)

# bytes per element of the TFLite tensor types a graph can hold (int4 and strings have none)
ITEMSIZE = {"int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2, "float16": 2,
            "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8,
            "complex64": 8, "complex128": 16}

# What each op is for. "io": the uint8 <-> int8 conversions at the model's ends.
ROLES = ("io", "normalize", "stem", "expand", "depthwise", "sigmoid", "swish", "se_squeeze",
         "se_reduce", "se_expand", "se_gate", "se_excite", "project", "residual", "head", "pool",
         "fc", "softmax")


def _check(io: str, form: str | None = None) -> None:
    if io not in IO_TYPES:
        raise ValueError(f"io must be one of {', '.join(IO_TYPES)}, got {io!r}")
    if form is not None and form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")


def input_ops(io: str, form: str) -> tuple[str, ...]:
    """Op types between the model's input tensor and its first int8 op, in order.

    ``uint8`` in the CPU form goes uint8 -> float32 -> int8 (``DEQUANTIZE`` then ``QUANTIZE``);
    the converter writes one uint8 -> int8 ``QUANTIZE``; an ``int8`` input needs no op.
    """
    _check(io, form)
    if io == "int8":
        return ()
    return ("DEQUANTIZE", "QUANTIZE") if form == "cpu" else ("QUANTIZE",)


def output_ops(io: str) -> tuple[str, ...]:
    """Op types after the last int8 op (the softmax): one int8 -> uint8 ``QUANTIZE`` for uint8."""
    _check(io)
    return ("QUANTIZE",) if io == "uint8" else ()


def input_dtypes(io: str, form: str) -> tuple[str, ...]:
    """The dtype of the model input and of each :func:`input_ops` output, in order."""
    ops = input_ops(io, form)
    return (io, *(("float32" if k == "DEQUANTIZE" else "int8") for k in ops))


@dataclass
class Quant:
    """Quantisation of a written tensor: per-tensor (one scale) or per-channel along ``dim``."""

    scale: np.ndarray
    zero_point: np.ndarray
    dim: int = 0


@dataclass
class Tensor:
    """An activation (shape per image, no batch) or, once weights are attached (the synthetic
    writer's graphs, a file read back), a constant with ``data``.

    A file's activation shapes start with a batch of 1, which is left out of ``shape``;
    ``batched`` False marks one read from a file without it (a dynamic or absent batch),
    whose ``shape`` is the file's. :attr:`file_shape` is the shape as a file stores it.
    A constant read from a file holds its stored bytes as a read-only ``uint8`` view (data
    kept outside the flatbuffer table, as large models keep it, included).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "int8"
    quant: Quant | None = None
    data: np.ndarray | None = None
    batched: bool = True

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @property
    def nbytes(self) -> int:
        n = self.itemsize
        for d in self.shape:
            n *= d
        return n

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def file_shape(self) -> tuple[int, ...]:
        """The shape as a .tflite file stores it: an activation with its batch of 1."""
        return self.shape if self.is_constant or not self.batched else (1, *self.shape)

    @property
    def stored_bytes(self) -> int:
        """Bytes of a constant's data as stored (0 for an activation)."""
        return 0 if self.data is None else int(self.data.nbytes)


@dataclass
class Op:
    """One TFLite operator: ``inputs`` are its activation operands, ``operands`` (when weights
    are attached) the full TFLite input list, constants included, ``-1`` for an omitted one."""

    name: str  # the Keras layer it comes from
    kind: str  # the TFLite builtin it lowers to
    inputs: list[int]
    output: int
    role: str = ""
    stage: str = "stem"
    kernel: int = 0  # spatial kernel size of a convolution (1: pointwise)
    stride: int = 1
    padding: str = ""  # "SAME" for convolutions (TF "same": bottom/right padding on odd sizes)
    activation: str = "NONE"  # fused activation: NONE or RELU6
    keep_dims: bool = False  # MEAN: squeeze-excite keeps [1, 1, C], the head's pool does not
    use_bias: bool = False  # the Keras layer has a trainable bias (SE convolutions, the dense)
    batch_norm: bool = False  # a BatchNorm follows in Keras (folded into the int8 weights)
    in_shapes: tuple[tuple[int, ...], ...] = ()
    out_shape: tuple[int, ...] = ()
    operands: list[int] | None = None
    outputs: list[int] | None = None  # read from a file: every output (``output`` is the first)

    @property
    def all_inputs(self) -> list[int]:
        """Every tensor the op reads (constants included, ``-1`` for an omitted one)."""
        return list(self.operands) if self.operands is not None else list(self.inputs)

    @property
    def all_outputs(self) -> list[int]:
        """Every tensor the op writes."""
        return list(self.outputs) if self.outputs is not None else [self.output]

    @property
    def in_channels(self) -> int:
        return self.in_shapes[0][-1]

    @property
    def out_channels(self) -> int:
        return self.out_shape[-1]

    @property
    def weights(self) -> int:
        """int8 weight elements after folding (0 for ops without a weight tensor)."""
        if self.kind == "CONV_2D":
            return self.kernel * self.kernel * self.in_channels * self.out_channels
        if self.kind == "DEPTHWISE_CONV_2D":
            return self.kernel * self.kernel * self.in_channels
        if self.kind == "FULLY_CONNECTED":
            return self.in_channels * self.out_channels
        return 0

    @property
    def biases(self) -> int:
        """int32 bias elements after folding (BatchNorm gives every convolution one)."""
        if self.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            return self.out_channels
        return 0

    @property
    def macs(self) -> int:
        if self.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            h, w = self.out_shape[0], self.out_shape[1]
            return h * w * self.weights
        return self.weights if self.kind == "FULLY_CONNECTED" else 0

    @property
    def params(self) -> int:
        """Trainable parameters of the Keras layer(s): BatchNorm gamma/beta counted, moving
        statistics and normalisation constants not (the paper's and Keras' convention)."""
        n = self.weights
        if self.use_bias:
            n += self.out_channels
        if self.batch_norm:
            n += 2 * self.out_channels
        return n


@dataclass
class Graph:
    """Tensors and ops in execution order. A graph read from a file (:func:`edgeeff.tflite.
    reader.read`) also carries its operator-code table (builtin, version) in table order and
    the names of its metadata entries."""

    tensors: list[Tensor] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    io: str = "uint8"
    form: str = "cpu"
    inputs: list[int] = field(default_factory=lambda: [0])
    outputs: list[int] = field(default_factory=list)
    op_codes: tuple[tuple[str, int], ...] = ()
    metadata: tuple[str, ...] = ()

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str = "int8") -> int:
        self.tensors.append(Tensor(name, tuple(shape), dtype))
        return len(self.tensors) - 1

    def shape(self, t: int) -> tuple[int, ...]:
        return self.tensors[t].shape

    def add(self, name: str, kind: str, inputs: list[int], out_shape: tuple[int, ...],
            stage: str, role: str, dtype: str = "int8", **attrs) -> int:
        out = self.tensor(name, out_shape, dtype)
        self.ops.append(Op(name, kind, list(inputs), out, role=role, stage=stage,
                           in_shapes=tuple(self.shape(t) for t in inputs),
                           out_shape=tuple(out_shape), **attrs))
        return out

    @property
    def op_kinds(self) -> list[str]:
        """The builtins the graph uses, sorted, each once."""
        return sorted({op.kind for op in self.ops})

    def constant_bytes(self, ops: list[Op] | None = None) -> int:
        """Stored bytes of the distinct constants ``ops`` read (None: of every constant)."""
        if ops is None:
            return sum(t.stored_bytes for t in self.tensors)
        seen = {t for op in ops for t in op.all_inputs if t >= 0 and self.tensors[t].is_constant}
        return sum(self.tensors[t].stored_bytes for t in seen)

    def prefix(self, n_ops: int) -> Graph:
        """The first ``n_ops`` ops; the last one's output becomes the model output."""
        ops = self.ops[:n_ops]
        return replace(self, ops=ops, outputs=[ops[-1].output] if ops else list(self.inputs))


class _Builder:
    """Lays out the int8 graph of an :class:`Architecture`."""

    def __init__(self, arch: Architecture, io: str, form: str):
        _check(io, form)
        self.arch, self.io, self.form = arch, io, form
        self.g = Graph(io=io, form=form)
        self.stage = "stem"
        self.relu6 = arch.activation == "relu6"

    def conv(self, name: str, x: int, filters: int, role: str, kernel: int = 1, stride: int = 1,
             se: bool = False) -> int:
        h, w, _ = self.g.shape(x)
        shape = (feature_size(h, stride), feature_size(w, stride), filters)
        return self.g.add(name, "CONV_2D", [x], shape, self.stage, role, kernel=kernel,
                          stride=stride, padding="SAME", use_bias=se, batch_norm=not se)

    def dwconv(self, name: str, x: int, kernel: int, stride: int) -> int:
        h, w, c = self.g.shape(x)
        shape = (feature_size(h, stride), feature_size(w, stride), c)
        return self.g.add(name, "DEPTHWISE_CONV_2D", [x], shape, self.stage, "depthwise",
                          kernel=kernel, stride=stride, padding="SAME", batch_norm=True)

    def act(self, name: str, x: int) -> int:
        if self.relu6:  # fused into the producing convolution
            self.g.ops[-1].activation = "RELU6"
            return x
        s = self.g.add(name + "_sigmoid", "LOGISTIC", [x], self.g.shape(x), self.stage, "sigmoid")
        return self.g.add(name, "MUL", [x, s], self.g.shape(x), self.stage, "swish")

    def se(self, prefix: str, x: int, filters_se: int) -> int:
        g = self.g
        h, w, c = g.shape(x)
        s = g.add(prefix + "se_squeeze", "MEAN", [x], (1, 1, c), self.stage, "se_squeeze",
                  keep_dims=True)
        s = self.conv(prefix + "se_reduce", s, filters_se, "se_reduce", se=True)
        s = self.act(prefix + "se_reduce_activation", s)
        s = self.conv(prefix + "se_expand", s, c, "se_expand", se=True)
        s = g.add(prefix + "se_expand_sigmoid", "LOGISTIC", [s], (1, 1, c), self.stage, "se_gate")
        return g.add(prefix + "se_excite", "MUL", [x, s], (h, w, c), self.stage, "se_excite")

    def build(self) -> Graph:
        a, g = self.arch, self.g
        r = a.spec.resolution
        dtypes = input_dtypes(self.io, self.form)
        x = g.tensor("input", (r, r, 3), dtypes[0])
        for kind, dtype in zip(input_ops(self.io, self.form), dtypes[1:]):
            name = "input_" + kind.lower()
            x = g.add(name, kind, [x], (r, r, 3), "stem", "io", dtype)
        if a.family.name != "lite":  # per-channel normalisation stays in the graph
            x = g.add("normalization_mul", "MUL", [x], (r, r, 3), "stem", "normalize")
            x = g.add("normalization", "ADD", [x], (r, r, 3), "stem", "normalize")
        x = self.conv("stem_conv", x, a.stem_filters, "stem", kernel=3, stride=2)
        x = self.act("stem_activation", x)
        for b in a.blocks:
            self.stage = f"stage{b.stage}"
            p = b.name + "_"
            inp = x
            if b.expand_ratio != 1:
                x = self.conv(p + "expand_conv", x, b.expanded, "expand")
                x = self.act(p + "expand_activation", x)
            x = self.dwconv(p + "dwconv", x, b.kernel, b.stride)
            x = self.act(p + "activation", x)
            if b.se_filters:
                x = self.se(p, x, b.se_filters)
            x = self.conv(p + "project_conv", x, b.filters_out, "project")
            if b.residual:
                x = g.add(p + "add", "ADD", [x, inp], g.shape(x), self.stage, "residual")
        self.stage = "head"
        x = self.conv("top_conv", x, a.top_filters, "head")
        x = self.act("top_activation", x)
        c = g.shape(x)[2]
        x = g.add("avg_pool", "MEAN", [x], (c,), "head", "pool")
        n = a.spec.num_classes
        x = g.add("predictions", "FULLY_CONNECTED", [x], (n,), "head", "fc", use_bias=True)
        x = g.add("predictions_softmax", "SOFTMAX", [x], (n,), "head", "softmax")
        for kind in output_ops(self.io):  # int8 -> uint8 output
            x = g.add("output_" + kind.lower(), kind, [x], (n,), "head", "io", self.io)
        g.outputs = [x]
        return g


def signature(g: Graph) -> list[tuple]:
    """Per op what the runtime sees, for comparing graphs op by op: builtin, kernel, stride,
    padding, fused activation, keep_dims, activation input shapes and dtypes, output shape
    and dtype."""
    return [(op.kind, op.kernel, op.stride, op.padding, op.activation, op.keep_dims,
             tuple((g.tensors[t].shape, g.tensors[t].dtype) for t in op.inputs),
             (g.tensors[op.output].shape, g.tensors[op.output].dtype)) for op in g.ops]


def graph(spec_or_arch: ModelSpec | Architecture, io: str = "uint8", form: str = "cpu") -> Graph:
    """The int8 graph ``export --int8 --io {io}`` writes: ``form="cpu"`` is model_int8.tflite,
    ``"converter"`` the graph given to TFLite Micro and the Edge TPU compiler."""
    arch = spec_or_arch if isinstance(spec_or_arch, Architecture) else expand(spec_or_arch)
    return _Builder(arch, io, form).build()

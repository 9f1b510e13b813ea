"""The int8 TFLite flatbuffer of a spec, written without TensorFlow (random, plausible weights).

``edgeeff export --int8`` builds the Keras model, converts it and quantises it: TensorFlow, and
a wait of its own (``benchmarks/export_speed.py`` times an export; docs/benchmarks.md). For
latency work only the graph matters: which ops run in which order, on which
shapes, with which kernels, fused activations and quantisation *types* (the runtime picks its
kernels from those, never from the weight values). :func:`build` takes that graph from
:func:`edgeeff.core.graph.graph`, attaches seeded weights and quantisation ranges to it (what
each op gets follows from its role and attributes there) and writes it with
:func:`edgeeff.tflite.writer.write` -- numpy and flatbuffers only, so it runs on the device
(``edgeeff profile``) in milliseconds.

What it mirrors from the exporter's ``model_int8.tflite`` (checked op by op and tensor by tensor
against real exports in tests/test_synth.py):

* ops in the same order, op codes in order of first use with the converter's versions
  (``CONV_2D``/``DEPTHWISE_CONV_2D`` v3: int8 per-channel);
* uint8 input of raw pixels -> ``DEQUANTIZE`` to float32 -> ``QUANTIZE`` to int8 (the CPU form,
  see :mod:`edgeeff.core.graph`; ``form="converter"``: one ``QUANTIZE``), lite: scale 1/128,
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

import math

import numpy as np

from edgeeff.core.arch import FAMILIES, ModelSpec, expand
from edgeeff.core.artifacts import METADATA_NAME
from edgeeff.core.fsutil import json_text
from edgeeff.core.graph import Graph, Op, Quant, Tensor, graph
from edgeeff.core.preprocess import Preprocessor
from edgeeff.tflite.writer import INPUT_NAME, SIGNATURE_KEY, write

_SIGMA_Q = 127.0 / math.sqrt(3.0)  # std of int8 weights drawn uniformly from -127..127


def _range_q(lo: float, hi: float) -> Quant:
    """int8 asymmetric per-tensor quantisation of the float range [lo, hi] (0 inside)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(round(-128.0 - lo / float(scale)), -128, 127))
    return Quant(np.array([scale], np.float32), np.array([zp], np.int64))


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
    """Attaches names, quantisation and seeded constants to :func:`edgeeff.core.graph.graph`."""

    def __init__(self, spec: ModelSpec, seed: int, fc_bias: bool, io: str = "uint8",
                 form: str = "cpu"):
        self.spec, self.io, self.form = spec, io, form
        self.arch = expand(spec)
        self.rng = np.random.default_rng(seed)
        self.fc_bias = fc_bias
        self.prefix = spec.name.replace("+", "p").replace("-", "_").replace(".", "_")
        self.g = Graph()
        self.rms: dict[int, float] = {}  # nominal float RMS of an activation (next weight scales)
        self.axes: int | None = None

    # ---------------------------------------------------------------- tensors
    def act(self, t: int, kind: str) -> None:
        """Name ``t`` after its producer and give it the range of ``kind``."""
        lo, hi, rms = RANGES[kind]
        q = (Quant(np.array([1.0 / 256.0], np.float32), np.array([-128], np.int64))
             if kind == "sigmoid" else _range_q(lo, hi))
        self.set(t, f"{self.prefix}/{self.g.tensors[t].name}", q, rms)

    def set(self, t: int, name: str, quant: Quant | None, rms: float = 1.0) -> None:
        tensor = self.g.tensors[t]
        tensor.name, tensor.quant = name, quant
        self.rms[t] = rms

    def const(self, name: str, shape: tuple[int, ...], dtype: str, data: np.ndarray,
              quant: Quant | None = None) -> int:
        self.g.tensors.append(Tensor(name, tuple(shape), dtype, quant, data))
        return len(self.g.tensors) - 1

    def weights(self, name: str, shape: tuple[int, ...], qdim: int, fan_in: int, in_rms: float,
                out_rms: float = 1.0) -> int:
        n_ch = shape[qdim]
        n = int(np.prod(shape))  # uniform int8, -128 folded onto -127 (symmetric range)
        data = np.maximum(np.frombuffer(self.rng.bytes(n), np.int8), np.int8(-127))
        gain = out_rms / (math.sqrt(fan_in) * max(in_rms, 1e-3) * _SIGMA_Q)
        scale = (gain * np.exp(self.rng.normal(0.0, 0.15, n_ch))).astype(np.float32)
        return self.const(f"{self.prefix}/{name}", shape, "int8", data,
                          Quant(scale, np.zeros(n_ch, np.int64), qdim))

    def bias(self, name: str, x: int, w: int) -> int:
        in_scale = self.g.tensors[x].quant.scale[0]
        w_scale = self.g.tensors[w].quant.scale
        scale = (np.float32(in_scale) * w_scale).astype(np.float32)
        n = len(w_scale)
        q = np.round(self.rng.normal(0.0, 0.1, n) / scale.astype(np.float64))
        data = np.clip(q, -2**31, 2**31 - 1).astype("<i4")
        return self.const(f"{self.prefix}/{name}", (n,), "int32", data,
                          Quant(scale, np.zeros(n, np.int64)))

    def const_vec(self, name: str, values) -> int:
        v = np.asarray(values, np.float64)
        q = _range_q(v.min(), v.max())
        data = np.clip(np.round(v / q.scale[0]) + q.zero_point[0], -128, 127).astype(np.int8)
        return self.const(f"{self.prefix}/{name}", v.shape, "int8", data, q)

    # ---------------------------------------------------------------- the graph
    def build(self, n_ops: int | None = None) -> Graph:
        g = graph(self.arch, self.io, self.form)
        if n_ops is not None:
            g = g.prefix(n_ops)
        self.g = g
        lite_input = self.spec.family == "lite"
        in_scale, in_zp = (1.0 / 128.0, 127) if lite_input else (1.0, 0)
        if self.io == "int8":  # the int8 tensor the QUANTIZE would have written
            in_zp -= 128
        self.input_q = Quant(np.array([in_scale], np.float32), np.array([in_zp], np.int64))
        self.in_rms = 0.5 if lite_input else 1.0
        self.set(g.inputs[0], f"{SIGNATURE_KEY}_{INPUT_NAME}:0", self.input_q, self.in_rms)
        for i, op in enumerate(g.ops):
            self._op(op, last=n_ops is None and i == len(g.ops) - 1)
        return g

    def _op(self, op: Op, last: bool) -> None:
        g, k, out = self.g, op.kind, op.output
        x = op.inputs[0]
        src = g.tensors[x]
        op.operands = list(op.inputs)
        if k == "DEQUANTIZE":  # uint8 model input -> float32 (the CPU form)
            self.set(out, "image_float", None)
        elif k == "QUANTIZE" and g.tensors[out].dtype == "int8":  # model input, zero point - 128
            q = Quant(self.input_q.scale.copy(), self.input_q.zero_point - 128)
            self.set(out, "tfl.quantize", q, self.in_rms)
        elif k == "QUANTIZE":  # softmax -> uint8 model output
            self.set(out, f"StatefulPartitionedCall:{0 if last else 1}",
                     Quant(src.quant.scale.copy(), src.quant.zero_point + 128))
        elif op.role == "normalize":  # efficientnet input normalisation: x * a + b per channel
            fam = FAMILIES[self.spec.family]
            mean, std = np.array(fam.mean), np.array(fam.std)
            if k == "MUL":
                c = self.const_vec("normalization/Cast/x", 1.0 / (255.0 * std))
                lo, hi = float((-mean / std).min()), float((1.0 / std).max())
            else:
                c = self.const_vec("normalization/Cast_1/x", -mean / std)
                lo, hi = float((-mean / std).min()), float(((1.0 - mean) / std).max())
            op.operands = [x, c]
            self.set(out, f"{self.prefix}/{op.name}", _range_q(lo, hi), 1.0)
        elif k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            kk, cin = op.kernel, src.shape[-1]
            if k == "CONV_2D":
                w = self.weights(op.name + "/convolution", (op.out_channels, kk, kk, cin), 0,
                                 kk * kk * cin, self.rms[x])
            else:
                w = self.weights(op.name + "/depthwise", (1, kk, kk, cin), 3, kk * kk,
                                 self.rms[x])
            op.operands = [x, w, self.bias(op.name + "/bias", x, w)]
            self.act(out, "relu6" if op.activation == "RELU6" else "linear")
        elif k in ("LOGISTIC", "SOFTMAX"):
            self.act(out, "sigmoid")
        elif k == "MUL":  # swish x * sigmoid(x), or squeeze-excite x * sigmoid(s): x's range
            self.act(out, "swish")
        elif k == "ADD":
            self.act(out, "residual")
        elif k == "MEAN":
            if self.axes is None:  # one [1, 2] constant shared by every MEAN, as converted
                self.axes = self.const(f"{self.prefix}/{op.name}/reduction_indices", (2,),
                                       "int32", np.array([1, 2], "<i4"))
            op.operands = [x, self.axes]
            if op.keep_dims:  # squeeze-excite: a smaller range than its input
                lo, hi, _ = RANGES["swish"]
                q = _range_q(lo, hi / 2)
            else:  # global average pool: the input's quantisation
                q = Quant(src.quant.scale.copy(), src.quant.zero_point.copy())
            self.set(out, f"{self.prefix}/{op.name}", q, self.rms[x])
        elif k == "FULLY_CONNECTED":
            n, c = op.out_channels, src.shape[-1]
            w = self.weights(op.name + "/MatMul", (n, c), 0, c, self.rms[x],
                             out_rms=RANGES["logits"][2])
            b = self.bias(op.name + "/BiasAdd", x, w) if self.fc_bias else -1
            op.operands = [x, w, b]
            self.act(out, "logits")
        else:
            raise ValueError(f"no synthesis rule for op {k} ({op.name})")


# --------------------------------------------------------------------------- public API


def layout(spec: ModelSpec, seed: int = 0, fc_bias: bool = False,
           n_ops: int | None = None, io: str = "uint8", form: str = "cpu") -> Graph:
    """The synthetic graph of ``spec``: :func:`edgeeff.core.graph.graph` with names,
    quantisation and seeded constants attached, ready for :func:`edgeeff.tflite.writer.write`.

    ``n_ops``: keep only the first ``n_ops`` ops of the export's graph; the last one's (int8)
    output becomes the model output (a prefix of the network, for profiling). ``io`` and
    ``form``: as :func:`edgeeff.core.graph.graph`.
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
        pp = Preprocessor.for_spec(spec, normalized=Preprocessor.folds_into_input(spec))
        named[METADATA_NAME] = json_text({
            "name": spec.name, "producer": "edgeeff.device.synth",
            "synthetic": f"random int8 weights (seed {seed}): for latency and memory "
                         "measurements only, predictions are meaningless",
            "spec": spec.to_dict(), "input": pp.to_dict(), "labels": None,
            "n_ops": n_ops,
        }, "the model's metadata", separators=(",", ":")).encode()
    return write(g, named)

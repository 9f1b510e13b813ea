"""Analytic cost of a spec: multiply-adds, parameters, int8 flash and peak activation RAM.

Pure Python. Every figure is a sum over :func:`edgeeff.core.graph.graph`, the int8 TFLite graph
the exporter produces, one op per kernel in execution order:

* ``macs``: multiply-adds of conv, depthwise and dense layers (the paper's "FLOPs");
* ``params``: trainable parameters of the Keras model (BatchNorm gamma/beta counted, moving
  statistics and normalisation constants not), the paper's and Keras' convention;
* ``flash_bytes``: int8 weights + int32 biases + per-channel quantisation parameters + a fixed
  per-tensor flatbuffer overhead (constants calibrated against the converter);
* ``peak_ram_bytes``: the largest total size of int8 activation tensors alive at once when the
  ops run in order, each tensor living from its producer to its last consumer (skip connections
  therefore stay alive across their block), the uint8 input included;
* ``tflm_arena_bytes``: TensorFlow Lite Micro's arena for the converter's form of the graph;
  ``tflm_reserved_bytes`` that plus the firmware's margin (:func:`tflm_reserved_arena`), the
  ``kTensorArenaSize`` ``export --format tflm`` writes and the RAM ``fit`` budgets on an MCU.

``io`` and ``form`` are :mod:`edgeeff.core.graph`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeeff.core.arch import ModelSpec, expand
from edgeeff.core.graph import Graph, Op, graph

__all__ = ["Cost", "const_tensors", "cost", "flash_bytes", "live_bytes", "stage_table",
           "tflm_overhead_bytes", "tflm_reserved_arena"]

# Flatbuffer bookkeeping, calibrated on models written by TFLiteConverter (tests keep these honest).
FLASH_PER_TENSOR = 180  # tensor table entry, name string, buffer entry
FLASH_PER_OP = 64  # operator entry with options and index vectors
FLASH_PER_CHANNEL_QUANT = 21  # weight + bias scales and zero points per output channel, as stored
FLASH_FIXED = 4096  # header, op-code table, signature, metadata

# TensorFlow Lite Micro's own arena use next to the activations ("tail" of the arena), fitted to
# tflite-micro's RecordingMicroAllocator on a 64-bit host (benchmarks/mcu_ram.py re-measures it):
TFLM_PER_TENSOR = 24  # TfLiteEvalTensor, one per tensor in the flatbuffer
TFLM_PER_OP = 165  # NodeAndRegistration (64) + kernel op data (~77) + graph bookkeeping (~24)
TFLM_PER_CHANNEL = 8  # conv/depthwise/dense per-channel output multiplier + shift (2 x int32)
TFLM_FIXED = 716  # persistent input/output TfLiteTensors, their quantization, subgraph structs

# The arena a firmware reserves (kTensorArenaSize) over the minimum above: one margin, here only.
# The minimum is the 64-bit host's (the estimate above, or tflite-micro measured on the host at
# export); a 32-bit Cortex-M needs less, as its pointers halve TFLM's structs, even with the
# CMSIS-NN kernels' scratch buffers (arena_used_bytes() under QEMU, benchmarks/mcu_firmware.py
# and docs/mcu.md). The margin covers what the host figure does not see: a CMSIS-NN scratch
# variant not measured (Cortex-M0+, no QEMU board) and an estimate a little under the
# measurement; then rounded up to whole KB.
TFLM_ARENA_MARGIN_PCT = 2
TFLM_ARENA_ALIGN = 1024


def tflm_reserved_arena(min_arena_bytes: int) -> int:
    """The tensor arena a firmware reserves for a graph whose TFLM minimum (host figure) is
    ``min_arena_bytes``: that plus TFLM_ARENA_MARGIN_PCT, rounded up to TFLM_ARENA_ALIGN.
    ``fit`` budgets this figure on microcontrollers and ``export --format tflm`` writes it as
    ``kTensorArenaSize``, so the two cannot differ."""
    with_margin = -(-int(min_arena_bytes) * (100 + TFLM_ARENA_MARGIN_PCT) // 100)
    return -(-with_margin // TFLM_ARENA_ALIGN) * TFLM_ARENA_ALIGN


def const_tensors(op: Op) -> int:
    """Constant tensors the flash and arena models count for ``op`` (weights and bias of a
    convolution or the dense layer, the scalar of a normalisation op)."""
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return 2
    return 1 if op.role == "normalize" else 0


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

    @property
    def tflm_reserved_bytes(self) -> int:
        """The arena the firmware reserves for this graph (:func:`tflm_reserved_arena`)."""
        return tflm_reserved_arena(self.tflm_arena_bytes)


def flash_bytes(g: Graph) -> int:
    weights = sum(op.weights for op in g.ops)
    biases = sum(op.biases for op in g.ops)
    # per-channel quantisation parameters of every weight and bias tensor
    quant = biases * FLASH_PER_CHANNEL_QUANT
    n_tensors = len(g.tensors) + sum(const_tensors(op) for op in g.ops)
    return (weights + 4 * biases + quant + FLASH_PER_TENSOR * n_tensors
            + FLASH_PER_OP * len(g.ops) + FLASH_FIXED)


def tflm_overhead_bytes(g: Graph) -> int:
    """TFLM's arena use beyond activations (tensor/node structs, per-channel kernel data)."""
    n_tensors = len(g.tensors) + sum(const_tensors(op) for op in g.ops)
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

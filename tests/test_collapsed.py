"""A trained model whose activations collapsed to about zero (a dead layer) runs, with one
warning, instead of aborting the process: XNNPACK cannot prepare an op on an int8 tensor of
scale ~1e-8 (ai-edge-litert's default delegate died with "double free or corruption" on such a
model from a 2-epoch training run), where TFLite's own kernels run it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeeff.core.arch import phi_spec
from edgeeff.core.graph import Quant
from edgeeff.device import synth
from edgeeff.tflite import reader
from edgeeff.tflite.writer import write

pytest.importorskip("ai_edge_litert")


def _collapsed_model(path, collapse: bool = True):
    """The synthesized int8 Lite model with the top convolution's output and the pooled
    features at a scale of 7.8e-9, what the converter wrote for the dead model."""
    g = synth.layout(phi_spec(-8, "lite", 10), fc_bias=True)
    mean = next(op for op in g.ops if op.kind == "MEAN")
    if collapse:
        for t in (g.tensors[mean.inputs[0]], g.tensors[mean.output]):
            t.quant = Quant(np.array([7.8e-9], np.float32), t.quant.zero_point, t.quant.dim)
    path.write_bytes(write(g, {}))
    return g.tensors[mean.inputs[0]].name


def test_reader_finds_collapsed_activations_only(tmp_path):
    dead = _collapsed_model(tmp_path / "dead.tflite")
    found = reader.collapsed_activations(reader.read((tmp_path / "dead.tflite").read_bytes()))
    assert dead in found and len(found) == 2
    _collapsed_model(tmp_path / "ok.tflite", collapse=False)
    assert reader.collapsed_activations(reader.read((tmp_path / "ok.tflite").read_bytes())) == []


def test_bench_runs_a_collapsed_model_with_one_warning(tmp_path):
    model = tmp_path / "dead.tflite"
    dead = _collapsed_model(model)
    r = subprocess.run([sys.executable, "-m", "edgeeff.cli", "bench", str(model), "--runs", "3",
                        "--warmup", "1", "--threads", "1", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    assert json.loads(r.stdout)["models"][0]["runs"] == 3
    warnings = [ln for ln in r.stderr.splitlines() if "collapsed" in ln]
    assert len(warnings) == 1 and dead in warnings[0] and "without XNNPACK" in warnings[0]

"""edgeeff.device.synth writes the exporter's int8 graph without TensorFlow: same ops in the same
order, same options, same tensors (shapes, types, quantisation layout), runnable in LiteRT and
in TFLite Micro with the same arena.

The reference exports (``edgeeff export --int8 --weights none``, 10-30 s each) are cached under
``~/.cache/edgeeff/test-exports`` (or ``$EDGEEFF_TEST_EXPORTS``), keyed by the exporter's
sources and the TensorFlow version, so only the first run after an exporter change pays for
them; tests that need them are skipped without TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core import specfile
from edgeeff.core.arch import phi_spec, preset_spec
from edgeeff.core.graph import graph, input_ops, output_ops, signature
from tests.conftest import ROOT, run_cli

litert = pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert ([runtime])")

from ai_edge_litert import schema_py_generated as S  # noqa: E402

from edgeeff.device import synth  # noqa: E402
from edgeeff.tflite import reader  # noqa: E402

# name -> export CLI arguments (what the spec is made from, exactly as the CLI resolves it)
CASES = {
    "lite-phi-8-c10": ["--phi", "-8", "--family", "lite", "--num-classes", "10"],
    "eff-phi-6-c10": ["--phi", "-6", "--family", "efficientnet", "--num-classes", "10"],
    "lite-phi0-c1000": ["--phi", "0", "--family", "lite", "--num-classes", "1000"],
    "b0-64-c1000": ["--preset", "b0", "--resolution", "64", "--num-classes", "1000"],
    "eff-phi-3-c10": ["--phi", "-3", "--family", "efficientnet", "--num-classes", "10"],
    "lite-phi+1-96-c1000": ["--phi", "1", "--family", "lite", "--resolution", "96",
                            "--num-classes", "1000"],
    "eff-phi-8-c10-int8": ["--phi", "-8", "--family", "efficientnet", "--num-classes", "10",
                           "--io", "int8"],
}
TFLM_CASES = ["lite-phi-8-c10", "eff-phi-6-c10"]  # 72 and 96 px, 10 classes: quick to bisect
# what the exported graph depends on: the Keras builder, the converter calls and the CPU-form
# rewrite, the versions and the spec's layout (core.graph walks the same block list as the
# builder)
EXPORTER_SOURCES = ["edgeeff/model/build.py", "edgeeff/export/tflite.py",
                    "edgeeff/export/__init__.py"]


def io_of(args: list[str]) -> str:
    return args[args.index("--io") + 1] if "--io" in args else "uint8"


def spec_of(args: list[str]):
    kw = {"preset": None, "phi": None, "family": None, "num_classes": None, "resolution": None}
    for flag, val in zip(args[::2], args[1::2]):
        k = flag[2:].replace("-", "_")
        if k == "io":
            continue
        kw[k] = val if k in ("preset", "family") else (float(val) if k == "phi" else int(val))
    return specfile.resolve(None, kw["preset"], kw["phi"], kw["family"], kw["num_classes"],
                            kw["resolution"])


def _cache_key(args: list[str]) -> str:
    h = hashlib.sha256()
    for pkg in ("tensorflow", "keras"):
        try:
            h.update(f"{pkg}={version(pkg)}".encode())
        except PackageNotFoundError:
            pass
    for f in EXPORTER_SOURCES:
        h.update((ROOT / f).read_bytes())
    h.update(" ".join(args).encode())
    g = graph(spec_of(args), io_of(args))
    h.update(repr([(op.kind, g.shape(op.output), op.weights) for op in g.ops]).encode())
    return h.hexdigest()[:20]


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, bytes]:
    """name -> the exporter's model_int8.tflite for every case, and name + "/tflm" -> the
    model its tflm format measured (the converter's graph, metadata stripped), cached across
    sessions."""
    cache = Path(os.environ.get("EDGEEFF_TEST_EXPORTS",
                                Path.home() / ".cache" / "edgeeff" / "test-exports"))
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, args in CASES.items():
        path = cache / f"{name}-{_cache_key(args)}.tflite"
        tflm = path.with_suffix(".tflm.tflite") if name in TFLM_CASES else None
        if not path.is_file() or (tflm is not None and not tflm.is_file()):
            if importlib.util.find_spec("tensorflow") is None:
                pytest.skip("the reference exports need TensorFlow ([export])")
            d = tmp_path_factory.mktemp("export")
            fmt = "tflite,tflm" if tflm is not None else "tflite"
            r = run_cli("export", *args, "--weights", "none", "--int8", "--num-calib", "8",
                        "--format", fmt, "--out", str(d / "out"), timeout=600)
            assert r.returncode == 0, r.stderr[-1500:]
            for src, dst in (("model_int8.tflite", path), ("tflm/model.tflite", tflm)):
                if dst is not None:
                    tmp = dst.with_suffix(".part")
                    shutil.copyfile(d / "out" / src, tmp)
                    tmp.replace(dst)
        out[name] = path.read_bytes()
        if tflm is not None:
            out[name + "/tflm"] = tflm.read_bytes()
    return out


def _model(data: bytes):
    return S.ModelT.InitFromPackedBuf(data, 0)


def _tensor_sig(m, i: int):
    if i < 0:
        return None
    t = m.subgraphs[0].tensors[i]
    q = t.quantization
    n_scale = 0 if q is None or q.scale is None else len(q.scale)
    sig = None if t.shapeSignature is None else tuple(int(x) for x in t.shapeSignature)
    return (tuple(int(x) for x in t.shape), t.type, sig, n_scale,
            None if q is None else q.quantizedDimension)


def _op_sigs(data: bytes) -> list[tuple]:
    m = _model(data)
    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in m.subgraphs[0].operators:
        code = m.operatorCodes[op.opcodeIndex]
        opts = op.builtinOptions
        opts = {} if opts is None else {k: v for k, v in vars(opts).items()}
        out.append((names[code.builtinCode], op.builtinOptionsType, sorted(opts.items()),
                    [_tensor_sig(m, i) for i in op.inputs],
                    [_tensor_sig(m, i) for i in op.outputs]))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_synthetic_graph_equals_the_exported_int8_graph(exports, name):
    spec, io = spec_of(CASES[name]), io_of(CASES[name])
    real, fake = exports[name], synth.build(spec, io=io)
    rg, fg = reader.read(real), reader.read(fake)
    # op list, and the cost model's layout (which the latency model reads) agrees with both
    assert [o.kind for o in fg.ops] == [o.kind for o in rg.ops]
    assert [o.kind for o in fg.ops] == [o.kind for o in graph(spec, io).ops]
    # a uint8 model converts its input through float32 (XNNPACK runs both ops), int8 has none
    assert reader.input_conversion(rg) == ((0, 1) if io == "uint8" else ())
    # op codes with the converter's versions, in the same order
    rm, fm = _model(real), _model(fake)
    assert [(c.builtinCode, c.version) for c in fm.operatorCodes] == \
        [(c.builtinCode, c.version) for c in rm.operatorCodes]
    # every op: options (fused activation, stride, padding, keep_dims, ...) and every tensor it
    # touches (shape, type, batch signature, per-tensor/per-channel quantisation layout)
    fs, rs = _op_sigs(fake), _op_sigs(real)
    for i, (f, r) in enumerate(zip(fs, rs)):
        assert f == r, f"op {i} ({r[0]}) differs:\n synth  {f}\n export {r}"
    assert len(fg.tensors) == len(rg.tensors)
    # model input and output: dtype, shape and quantisation exactly
    for a, b in ((fg.inputs[0], rg.inputs[0]), (fg.outputs[0], rg.outputs[0])):
        ta, tb = fg.tensors[a], rg.tensors[b]
        assert (ta.file_shape, ta.dtype, ta.quant.zero_point.tolist()) == \
            (tb.file_shape, tb.dtype, tb.quant.zero_point.tolist())
        assert ta.quant.scale == pytest.approx(tb.quant.scale, rel=1e-6)
    assert fm.signatureDefs[0].signatureKey == rm.signatureDefs[0].signatureKey
    # no float anywhere but the input conversion: a full-integer graph like the export's
    assert reader.non_integer_ops(fg) == reader.non_integer_ops(rg) == []


@pytest.mark.parametrize("name", list(CASES))
def test_predicted_written_and_exported_graphs_agree_op_by_op(exports, name):
    """core.graph's prediction, the writer's file read back and the converter's export: the
    same builtin, kernel, stride, padding, fused activation, keep_dims, shapes and dtypes."""
    spec, io = spec_of(CASES[name]), io_of(CASES[name])
    predicted = graph(spec, io)
    written, exported = reader.read(synth.build(spec, io=io)), reader.read(exports[name])
    p, w, e = signature(predicted), signature(written), signature(exported)
    assert len(p) == len(w) == len(e)
    for i, (a, b, c) in enumerate(zip(p, w, e)):
        assert a == b == c, f"op {i}:\n predicted {a}\n written   {b}\n exported  {c}"
    assert (written.io, written.form) == (exported.io, exported.form) == (io, "cpu")
    ends = input_ops(io, "cpu")
    assert [op.kind for op in exported.ops[:len(ends)]] == list(ends)
    assert [op.kind for op in exported.ops[len(p) - len(output_ops(io)):]] == list(output_ops(io))


@pytest.mark.parametrize("io,form", [("uint8", "cpu"), ("uint8", "converter"), ("int8", "cpu")])
@pytest.mark.parametrize("spec", [phi_spec(-8, "lite", 10), phi_spec(-6, "efficientnet", 10)],
                         ids=["lite", "efficientnet"])
def test_writer_writes_the_predicted_graph(spec, io, form):
    """Without TensorFlow: the file the writer makes from core.graph reads back as that graph,
    op by op, with the I/O form the one rule in core.graph gives."""
    predicted = graph(spec, io, form)
    written = reader.read(synth.build(spec, io=io, form=form))
    assert signature(written) == signature(predicted)
    assert [op.kind for op in written.ops[:len(input_ops(io, form))]] == list(input_ops(io, form))
    assert written.io == io and written.form == (form if io == "uint8" else "cpu")
    # every convolution's weight tensor holds the predicted number of int8 weights
    for wop, pop in zip(written.ops, predicted.ops):
        if pop.weights:
            assert written.tensors[wop.operands[1]].data.size == pop.weights


@pytest.mark.parametrize("name", TFLM_CASES)
def test_converter_form_equals_what_the_tflm_format_ships(exports, name):
    """TFLite Micro and the Edge TPU compiler get the converter's graph: one uint8 -> int8
    QUANTIZE, no float tensor in the arena."""
    spec = spec_of(CASES[name])
    real, fake = exports[name + "/tflm"], synth.build(spec, form="converter", metadata=False)
    assert _op_sigs(fake) == _op_sigs(real)
    g = reader.read(real)
    assert [o.kind for o in g.ops] == [o.kind for o in graph(spec, form="converter").ops]
    assert g.ops[0].kind == "QUANTIZE" and reader.input_conversion(g) == ()


@pytest.mark.parametrize("name", list(CASES))
def test_synthetic_model_runs_in_litert(name):
    from edgeeff.device.runtime import load_interpreter

    spec = spec_of(CASES[name])
    it, _, _ = load_interpreter(synth.build(spec), num_threads=2)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, spec.resolution,
                                                                spec.resolution, 3]
    x = np.random.default_rng(0).integers(0, 256, inp["shape"], dtype=np.uint8)
    it.set_tensor(inp["index"], x)
    it.invoke()
    y = it.get_tensor(out["index"])
    assert y.dtype == np.uint8 and y.shape == (1, spec.num_classes)
    probs = (y.astype(np.float64) - out["quantization"][1]) * out["quantization"][0]
    assert probs.sum() == pytest.approx(1.0, abs=0.02 + spec.num_classes / 256 / 2)


def test_synthetic_lite_and_efficientnet_inputs_carry_the_exporters_quantisation():
    lite = reader.read(synth.build(phi_spec(-6, "lite", 10)))
    eff = reader.read(synth.build(phi_spec(-6, "efficientnet", 10)))
    li, ei = lite.tensors[lite.inputs[0]], eff.tensors[eff.inputs[0]]
    assert tuple(li.quant.scale) == (1 / 128,) and tuple(li.quant.zero_point) == (127,)  # (x - 127) / 128 folded in
    assert tuple(ei.quant.scale) == (1.0,) and tuple(ei.quant.zero_point) == (0,)  # raw pixels, MUL/ADD follow
    assert [o.kind for o in eff.ops[:5]] == ["DEQUANTIZE", "QUANTIZE", "MUL", "ADD", "CONV_2D"]
    assert [o.kind for o in lite.ops[:3]] == ["DEQUANTIZE", "QUANTIZE", "CONV_2D"]
    for g in (lite, eff):
        o = g.tensors[g.outputs[0]]
        assert o.dtype == "uint8" and tuple(o.quant.scale) == (1 / 256,)
        assert tuple(o.quant.zero_point) == (0,)


@pytest.mark.parametrize("name", TFLM_CASES)
def test_synthetic_model_needs_the_same_tflm_arena(exports, name, tmp_path):
    pytest.importorskip("tflite_micro", reason="needs tflite-micro ([export])")
    from edgeeff.export.tflm import measure_arena
    from edgeeff.tflite.rewrite import strip

    real, fake = tmp_path / "real.tflite", tmp_path / "fake.tflite"
    real.write_bytes(strip(exports[name + "/tflm"]))  # what 'export --format tflm' measures
    fake.write_bytes(synth.build(spec_of(CASES[name]), metadata=False, form="converter"))
    r = spec_of(CASES[name]).resolution
    np.save(tmp_path / "x.npy", np.zeros((1, r, r, 3), np.uint8))
    a = measure_arena(real)["min_arena_bytes"]
    b = measure_arena(fake, invoke_input=tmp_path / "x.npy")  # and it runs there
    assert b["min_arena_bytes"] == a
    assert len(b["output"]) == 10


def test_synthesis_is_fast_and_seeded():
    spec = preset_spec("lite0")
    synth.build(spec)  # imports
    t = time.perf_counter()
    a = synth.build(spec)
    dt = time.perf_counter() - t
    assert dt < 1.0, f"Lite0 took {dt:.2f} s"
    assert synth.build(spec) == a  # same seed, same bytes
    assert synth.build(spec, seed=1) != a


def test_prefix_and_trained_variants():
    spec = phi_spec(-4, "efficientnet", 10)
    cg = graph(spec)
    g = reader.read(synth.build(spec, n_ops=40))
    assert [o.kind for o in g.ops] == [o.kind for o in cg.ops[:40]]
    out = g.tensors[g.outputs[0]]
    assert out.file_shape == (1, *cg.shape(cg.ops[39].output)) and out.dtype == "int8"
    # a trained model's dense layer keeps its bias: one more int32 [classes] tensor
    plain, trained = (reader.read(synth.build(spec, fc_bias=b)) for b in (False, True))
    assert len(trained.tensors) == len(plain.tensors) + 1
    fc = next(o for o in trained.ops if o.kind == "FULLY_CONNECTED")
    assert trained.tensors[fc.operands[2]].shape == (10,)
    assert trained.tensors[fc.operands[2]].dtype == "int32"


def test_resized_lite0_keeps_same_padding_semantics():
    # odd feature-map sizes (TF "same" padding with stride 2 pads bottom/right): shapes follow
    spec = replace(preset_spec("lite0", 10), resolution=120)
    g = reader.read(synth.build(spec))
    shapes = [g.tensors[o.outputs[0]].file_shape for o in g.ops]
    assert shapes == [(1, *graph(spec).shape(o.output)) for o in graph(spec).ops]
    assert (1, 8, 8, 112) in shapes and (1, 4, 4, 192) in shapes  # 15 -> 8 -> 4

"""export: real artifacts, run in real runtimes (ai-edge-litert, tflite-micro)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeeff.core.arch import phi_spec
from tests.conftest import ROOT, needs, run_cli, seed_everything

tf = needs("tensorflow")
needs("ai_edge_litert")

from edgeeff.device.runtime import Classifier, read_embedded_metadata  # noqa: E402
from edgeeff.export import ExportRequest, run  # noqa: E402
from edgeeff.tflite import reader  # noqa: E402
from edgeeff.tflite.schema import tfl  # noqa: E402

SMALL = phi_spec(-4.0, "lite", 10)  # 128 px, tiny: seconds to convert


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "small"
    seed_everything(0)
    card = run(ExportRequest(spec=SMALL, int8=True, calib=str(ROOT / "calibration"), num_calib=8,
                             formats=["tflite", "edgetpu", "tflm"], out=out), log=lambda m: None)
    return out, card


def test_int8_is_full_integer_with_raw_pixel_input(small_export):
    out, card = small_export
    data = (out / "model_int8.tflite").read_bytes()
    g = reader.read(data)
    assert reader.non_integer_ops(g) == []
    inp, outp = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    assert inp.dtype == "uint8" and inp.file_shape == (1, 128, 128, 3)
    assert outp.dtype == "uint8" and outp.file_shape == (1, 10)
    # (x - 127) / 128 folded into the input quantisation: raw pixels go straight in
    assert tuple(inp.quant.scale) == (0.0078125,) and tuple(inp.quant.zero_point) == (127,)
    assert "MUL" not in g.op_kinds
    # the CPU model converts its input through float32 (XNNPACK runs both ops); TFLite Micro
    # and the Edge TPU compiler get the converter's single uint8 -> int8 QUANTIZE
    assert [o.kind for o in g.ops[:3]] == ["DEQUANTIZE", "QUANTIZE", "CONV_2D"]
    assert reader.input_conversion(g) == (0, 1)
    micro = reader.read((out / "tflm" / "model.tflite").read_bytes())
    assert [o.kind for o in micro.ops[:2]] == ["QUANTIZE", "CONV_2D"]
    assert [o.kind for o in micro.ops[1:]] == [o.kind for o in g.ops[2:]]
    assert card.artifacts["model_int8.tflite"]["io"] == "uint8"


@pytest.fixture(scope="module")
def int8_io_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "int8io"
    seed_everything(0)
    run(ExportRequest(spec=SMALL, int8=True, calib=str(ROOT / "calibration"), num_calib=8,
                      out=out, io="int8"), log=lambda m: None)
    return out


def test_io_int8_has_no_conversion_ops_and_scores_like_uint8(small_export, int8_io_export):
    g = reader.read((int8_io_export / "model_int8.tflite").read_bytes())
    inp, outp = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    assert inp.dtype == outp.dtype == "int8"
    assert "QUANTIZE" not in g.op_kinds and "DEQUANTIZE" not in g.op_kinds
    assert g.ops[0].kind == "CONV_2D" and g.ops[-1].kind == "SOFTMAX"
    assert tuple(inp.quant.scale) == (0.0078125,) and tuple(inp.quant.zero_point) == (-1,)  # (x - 127) / 128, int8
    q8, u8 = Classifier(int8_io_export / "model_int8.tflite"), Classifier(
        small_export[0] / "model_int8.tflite")
    assert q8.input_dtype == np.int8 and not q8.raw_pixel_input
    rng = np.random.default_rng(3)
    for _ in range(4):  # the runtime feeds int8 pixels and reads int8 probabilities
        img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
        a, b = q8(img), u8(img)
        assert a.argmax() == b.argmax() and np.abs(a - b).max() <= 1 / 256 + 1e-6
        assert abs(a.sum() - 1) < 0.05


def test_int8_runs_in_litert_and_agrees_with_float(small_export):
    out, _ = small_export
    q, f = Classifier(out / "model_int8.tflite"), Classifier(out / "model_float32.tflite")
    assert q.runtime == "ai_edge_litert" and q.raw_pixel_input
    assert q.labels == [f"class_{i}" for i in range(10)]
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    a, b = f(img), q(img)
    assert a.shape == b.shape == (10,)
    assert abs(a.sum() - 1) < 1e-3 and np.abs(a - b).max() < 0.1


def test_metadata_labels_and_model_card(small_export):
    out, card = small_export
    md = read_embedded_metadata((out / "model_int8.tflite").read_bytes())
    assert md["name"] == SMALL.name and md["input"]["normalized"] is True
    assert md["input"]["mean"] == [127.0] * 3 and md["input"]["std"] == [128.0] * 3
    assert len(md["labels"]) == 10 and md["calibration"]["count"] >= 1
    assert (out / "labels.txt").read_text().splitlines()[0] == "class_0"
    disk = json.loads((out / "model_card.json").read_text())
    assert disk["spec"]["phi"] == -4.0 and disk["cost_estimate"]["macs"] > 0
    assert disk["calibration"]["sha256"] and disk["calibration"]["count"] == 8
    assert disk["quantization"]["images"] >= 1 and "top1_agreement" in disk["quantization"]
    assert disk["tools"]["tensorflow"] and disk["weights"] == "none"
    assert disk["artifacts"]["model_int8.tflite"]["bytes"] == (out / "model_int8.tflite").stat().st_size


def test_edgetpu_report_maps_every_op(small_export):
    out, card = small_export
    rep = json.loads((out / "edgetpu_report.json").read_text())
    assert rep["ops_on_edgetpu"] == rep["ops_total"] and rep["first_cpu_op"] is None
    assert rep["fits_parameter_cache"] is True
    comp = card.artifacts["edgetpu"]["compiler"]
    assert comp["compiled"] is False and "edgetpu_compiler" in comp["message"]
    # why the compiler gets the converter's graph: the CPU model's float DEQUANTIZE would
    # leave every op on the CPU
    from edgeeff.export import edgetpu

    cpu = edgetpu.compatibility((out / "model_int8.tflite").read_bytes())
    assert cpu["ops_on_edgetpu"] == 0 and cpu["first_cpu_op"]["op"] == "DEQUANTIZE"


def test_edgetpu_report_cuts_graph_at_unsupported_op():
    """A full-int8 graph with one op the Edge TPU lacks in its middle: the ops before it map,
    it and every later op run on the CPU, as the compiler cuts graphs."""
    import keras

    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.export import edgetpu
    from edgeeff.export.tflite import convert_float, convert_int8

    seed_everything(3)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = keras.layers.LeakyReLU(negative_slope=0.2)(x)  # LEAKY_RELU: not on Coral's op list
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))
    images = np.random.default_rng(3).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    int8 = convert_int8(model, images, Preprocessor(32))
    g = reader.read(int8)
    assert reader.non_integer_ops(g) == []  # every tensor 8-bit: only the op is at fault
    names = [op.kind for op in g.ops]
    cut = names.index("LEAKY_RELU")
    assert 0 < cut < len(names) - 1 and names[:cut].count("CONV_2D") == 2

    rep = edgetpu.compatibility(int8)
    assert rep["ops_total"] == len(names) and rep["ops_on_edgetpu"] == cut
    assert rep["first_cpu_op"]["index"] == cut and rep["first_cpu_op"]["op"] == "LEAKY_RELU"
    assert rep["first_cpu_op"]["reason"] == "operation not supported by the Edge TPU"
    assert [r["runs_on"] for r in rep["ops"]] == ["edgetpu"] * cut + ["cpu"] * (len(names) - cut)
    assert {r["reason"] for r in rep["ops"][cut + 1:]} == {"after the first unmapped op"}
    assert f"graph is cut at op #{cut} LEAKY_RELU" in edgetpu.format_report(rep)

    # a float model is cut at its very first op, which is not 8-bit
    rep = edgetpu.compatibility(convert_float(model))
    assert rep["ops_on_edgetpu"] == 0 and rep["first_cpu_op"]["index"] == 0
    assert "not 8-bit quantised" in rep["first_cpu_op"]["reason"]


def test_tflm_sources_allocate_and_run_in_tflite_micro(small_export, tmp_path):
    needs("tflite_micro")
    out, card = small_export
    arena = json.loads((out / "tflm" / "arena.json").read_text())
    h = (out / "tflm" / "model_data.h").read_text()
    cc = (out / "tflm" / "model_data.cc").read_text()
    assert f"kTensorArenaSize = {arena['recommended_arena_bytes']}" in h
    # the int8-only registrations where every instance of the op is int8 (CMSIS-NN's int8 path)
    assert "AddConv2D(tflite::Register_CONV_2D_INT8())" in h
    assert "AddDepthwiseConv2D(tflite::Register_DEPTHWISE_CONV_2D_INT8())" in h
    assert "AddSoftmax(" in h
    assert "MicroMutableOpResolver<" in h and "alignas(16)" in cc
    stripped = out / "tflm" / "model.tflite"  # the int8 model less edgeeff's JSON metadata
    size = stripped.stat().st_size
    assert f"g_model_data_len = {size};" in cc
    assert size < (out / "model_int8.tflite").stat().st_size
    assert read_embedded_metadata(stripped.read_bytes()) is None
    # the arena found is minimal: it allocates, 1 KB less does not (probed in a subprocess)
    code = ("import sys; from edgeeff.export.tflm_probe import _allocates;"
            f"m=open({str(stripped)!r},'rb').read();"
            f"print(_allocates(m,{arena['min_arena_bytes']}), _allocates(m,{arena['min_arena_bytes'] - 1024}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "True False"
    # one invocation in TFLite Micro gives the same class as LiteRT
    img = np.random.default_rng(2).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", img)
    from edgeeff.export.tflm import measure_arena

    res = measure_arena(stripped, tmp_path / "x.npy")
    clf = Classifier(out / "model_int8.tflite")
    clf.interpreter.set_tensor(clf._in_index, img)
    clf.interpreter.invoke()
    ref = clf.interpreter.get_tensor(clf._out_index)[0].astype(int)
    micro = np.array(res["output"], dtype=int)
    # TFLM's reference kernels and XNNPACK round differently; the answer must not change
    assert micro.argmax() == ref.argmax()
    assert np.abs(micro - ref).max() <= 16  # of 256 steps


def test_tflm_rejects_ops_it_lacks():
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.core.graph import Graph, Op, Tensor
    from edgeeff.export.tflm import resolver_methods

    g = Graph(tensors=[Tensor("x", (4,)), Tensor("y", (4,)), Tensor("z", (4,))],
              ops=[Op("a", "CONV_2D", [0], 1), Op("b", "GELU", [1], 2)], outputs=[2])
    with pytest.raises(EdgeeffError, match="GELU"):
        resolver_methods(g)
    assert resolver_methods(Graph(g.tensors, g.ops[:1], outputs=[1])) == ["AddConv2D"]


def test_efficientnet_family_int8_keeps_normalisation_in_graph(tmp_path):
    spec = phi_spec(-5, "efficientnet", 3)
    out = tmp_path / "eff"
    seed_everything(1)
    run(ExportRequest(spec=spec, int8=True, calib=str(ROOT / "calibration"), num_calib=6,
                      out=out), log=lambda m: None)
    g = reader.read((out / "model_int8.tflite").read_bytes())
    assert reader.non_integer_ops(g) == []
    assert {"LOGISTIC", "MUL", "MEAN"} <= set(g.op_kinds)  # swish and squeeze-excite
    clf = Classifier(out / "model_int8.tflite")
    assert clf(np.full((spec.resolution,) * 2 + (3,), 128, np.uint8)).shape == (3,)


def test_cli_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run_cli("export", "--phi", "-4", "--family", "lite", "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and (out / "keep.txt").exists()
    bad = tmp_path / "calib"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    out2 = tmp_path / "o2"
    r = run_cli("export", "--phi", "-4", "--family", "lite", "--int8", "--calib", str(bad),
                "--out", str(out2))
    assert r.returncode == 2 and "no usable calibration images" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out2.exists() and not list(tmp_path.glob(".o2*"))


@pytest.mark.parametrize("args,msg", [
    (["--preset", "lite9"], "unknown preset"),
    (["--spec", "nope.json"], "spec file not found"),
    (["--preset", "lite0", "--weights", "missing.weights.h5"], "weights file not found"),
    (["--preset", "lite0", "--format", "coreml"], "unknown format"),
    (["--preset", "lite0", "--io", "int8"], "add --int8"),
    (["--preset", "lite0", "--int8", "--calib-seed", "-1"], "'--calib-seed'"),
])
def test_cli_bad_inputs(tmp_path, args, msg):
    r = run_cli("export", *args, "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and r.stderr.count("\n") == 1 and not (tmp_path / "x").exists()


def test_debug_reports_worst_layers(tmp_path):
    seed_everything(2)
    card = run(ExportRequest(spec=SMALL, int8=True, calib=str(ROOT / "calibration"), num_calib=6,
                             out=tmp_path / "d", debug=True), log=lambda m: None)
    worst = card.quantization.worst_layers
    assert 1 <= len(worst) <= 5
    assert all(w["tensor"] and w["op"] and w["rmse"] >= 0 for w in worst)
    ratios = [w["rmse_over_scale"] for w in worst]
    # every layer has its step (the debugger's dump, not its stats dict, carries it): a ratio
    # of None everywhere would sort trivially and rank nothing
    assert all(isinstance(r, float) and r > 0 for r in ratios), ratios
    assert ratios == sorted(ratios, reverse=True)


def _standard_metadata(model: bytes) -> bytes:
    m = tfl.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        if m.Metadata(i).Name() == b"TFLITE_METADATA":
            return m.Buffers(m.Metadata(i).Buffer()).DataAsNumpy().tobytes()
    raise AssertionError("no TFLITE_METADATA")


def test_standard_tflite_metadata_and_packed_labels(small_export):
    """The M001 flatbuffer MediaPipe/Task Library read, decoded field by field (schema order)."""
    import zipfile

    import flatbuffers
    from flatbuffers.table import Table

    out, _ = small_export
    data = (out / "model_int8.tflite").read_bytes()
    with zipfile.ZipFile(out / "model_int8.tflite") as z:  # labels packed in the model file
        assert z.read("labels.txt").decode() == (out / "labels.txt").read_text()
        assert z.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED
    meta = _standard_metadata(data)
    assert meta[4:8] == b"M001"

    def root(buf):
        return Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))

    def rel(t, slot):  # vtable slot -> offset relative to the table (Vector* take these)
        o = t.Offset(4 + 2 * slot)
        assert o, f"field {slot} missing"
        return o

    def field(t, slot):  # absolute position (String/Get/Indirect take these)
        return t.Pos + rel(t, slot)

    def sub(t, slot):
        return Table(t.Bytes, t.Indirect(field(t, slot)))

    def string(t, slot):
        return t.String(field(t, slot)).decode()

    def vec(t, slot):
        p = rel(t, slot)
        return [Table(t.Bytes, t.Indirect(t.Vector(p) + 4 * i)) for i in range(t.VectorLen(p))]

    def floats(t, slot):
        p = rel(t, slot)
        start = t.Vector(p)
        return [flatbuffers.encode.Get(flatbuffers.packer.float32, t.Bytes, start + 4 * i)
                for i in range(t.VectorLen(p))]

    model_md = root(meta)
    assert string(model_md, 0) == SMALL.name and string(model_md, 7) == "1.0.0"
    subgraph = vec(model_md, 3)[0]
    image = vec(subgraph, 2)[0]
    assert string(image, 0) == "image"
    norm = sub(vec(image, 4)[0], 1)  # ProcessUnit.options -> NormalizationOptions
    assert floats(norm, 0) == [127.0] * 3 and floats(norm, 1) == [128.0] * 3
    props = sub(sub(image, 3), 1)  # Content.content_properties -> ImageProperties
    size = sub(props, 1)
    assert [size.Get(flatbuffers.number_types.Uint32Flags, field(size, i)) for i in (0, 1)] == \
        [128, 128]
    out_t = vec(subgraph, 3)[0]
    label_file = vec(out_t, 6)[0]
    assert string(label_file, 0) == "labels.txt"
    assert label_file.Get(flatbuffers.number_types.Int8Flags, field(label_file, 2)) == 2  # AXIS


def test_mediapipe_reads_labels_when_installed(small_export):
    """MediaPipe needs opencv-contrib (it clashes with opencv-headless), so it is not a dev
    dependency; where it is installed, its ImageClassifier must load the model and name labels."""
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks import python as mpt
    from mediapipe.tasks.python import vision

    out, _ = small_export
    opts = vision.ImageClassifierOptions(
        base_options=mpt.BaseOptions(model_asset_path=str(out / "model_int8.tflite")),
        max_results=3)
    clf = vision.ImageClassifier.create_from_options(opts)
    img = np.full((128, 128, 3), 100, np.uint8)
    res = clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=img))
    assert all(c.category_name.startswith("class_") for c in res.classifications[0].categories)

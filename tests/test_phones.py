"""Phones (issue 38): the float16 GPU-delegate model, the GPU report, the phone profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeeff.core import artifacts as A
from edgeeff.core import gpu
from edgeeff.core.arch import phi_spec, preset_spec
from edgeeff.core.graph import graph
from tests.conftest import ROOT, needs, run_cli

PHONES = ("pixel4-cpu", "pixel4-gpu")


# --------------------------------------------------------------------------- the float16 model


def test_float16_top1_equals_float32_on_imagenet_dev(lite0_export, imagenet_dev):
    res = {}
    for name in (A.FLOAT_MODEL, A.FLOAT16_MODEL):
        r = run_cli("eval", str(lite0_export / name), "--data", str(imagenet_dev), "--json")
        assert r.returncode == 0, r.stderr
        res[name] = json.loads(r.stdout)
        assert res[name]["images"] == 200
    f32, f16 = res[A.FLOAT_MODEL]["top1"], res[A.FLOAT16_MODEL]["top1"]
    assert f16 >= 0.88
    assert round(abs(f32 - f16), 4) <= 0.005  # within 0.5 point: one image of 200


def test_float16_model_is_half_the_float32_one_with_the_same_metadata(lite0_export):
    from edgeeff.device.runtime import read_embedded_metadata
    from edgeeff.tflite import reader

    card = json.loads((lite0_export / A.MODEL_CARD).read_text())
    f32, f16 = card["artifacts"][A.FLOAT_MODEL], card["artifacts"][A.FLOAT16_MODEL]
    assert f16["bytes"] == (lite0_export / A.FLOAT16_MODEL).stat().st_size
    assert 0.45 < f16["bytes"] / f32["bytes"] < 0.55
    assert f16["input"] == f32["input"] and f16["output"] == f32["output"]
    assert f16["input"]["dtype"] == "float32" and f16["weights"] == "float16"
    data = (lite0_export / A.FLOAT16_MODEL).read_bytes()
    g = reader.read(data)
    assert any(t.dtype == "float16" and t.is_constant for t in g.tensors)
    assert "TFLITE_METADATA" in g.metadata
    md16 = read_embedded_metadata(data)
    md32 = read_embedded_metadata((lite0_export / A.FLOAT_MODEL).read_bytes())
    assert md16 == md32  # same name, spec, labels and preprocessing
    assert card["artifacts"]["gpu_delegate"]["report"] == A.GPU_REPORT


# MediaPipe is no extra: its wheel pulls opencv-contrib-python, whose cv2 would replace
# opencv-python-headless's. The test installs the wheel alone (--no-deps; its other needs,
# numpy, absl, flatbuffers and protobuf, come with TensorFlow) into a cached folder of its own
# and runs the classifier in a subprocess with that folder on PYTHONPATH.
MEDIAPIPE = ("mediapipe==1.2.3", "sounddevice")
MEDIAPIPE_RUN = """
import json
import sys
import mediapipe as mp
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions
opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=sys.argv[1]),
                                     max_results=3)
with vision.ImageClassifier.create_from_options(opts) as clf:
    for p in sys.argv[2:]:
        cats = clf.classify(mp.Image.create_from_file(p)).classifications[0].categories
        print(json.dumps([p, [[c.index, c.category_name, c.score] for c in cats]]))
"""


@pytest.fixture(scope="session")
def mediapipe_site() -> Path:
    import os
    import subprocess
    import sys

    site = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeeff" / \
        ("mediapipe-" + "-".join(MEDIAPIPE).replace("=", ""))
    if not (site / "mediapipe").is_dir():
        tmp = site.with_name(site.name + ".partial")
        r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q",
                            "install", "--no-deps", "--target", str(tmp), *MEDIAPIPE],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.skip(f"pip cannot fetch {' '.join(MEDIAPIPE)}: {r.stderr.strip()[-200:]}")
        tmp.rename(site)
    return site


def test_mediapipe_image_classifier_runs_the_float16_model(lite0_export, imagenet_dev,
                                                           mediapipe_site):
    import os
    import subprocess
    import sys

    photos = sorted(imagenet_dev.glob("*.JPEG"))[::20]  # 10 classes
    labels = (lite0_export / A.LABELS).read_text().splitlines()
    wnids = (ROOT / "edgeeff" / "data" / "imagenet_wnids.txt").read_text().split()
    env = dict(os.environ, PYTHONPATH=str(mediapipe_site))
    r = subprocess.run([sys.executable, "-c", MEDIAPIPE_RUN, str(lite0_export / A.FLOAT16_MODEL),
                        *map(str, photos)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert len(rows) == len(photos)
    right = 0
    for (path, cats), p in zip(rows, photos):
        assert path == str(p) and len(cats) == 3
        # labels from the model's metadata, scores sorted
        assert all(labels[i] == name for i, name, _ in cats)
        scores = [sc for _, _, sc in cats]
        assert scores == sorted(scores, reverse=True)
        right += int(wnids[cats[0][0]] == p.name.split("_")[0])
    # normalisation from the metadata; MediaPipe resizes the whole photo (no crop)
    assert right >= 7, right


# --------------------------------------------------------------------------- the GPU report


def test_gpu_report_matches_the_analyzer_on_the_exported_graph(lite0_export):
    needs("tensorflow")
    from edgeeff.export import gpu as gpu_export

    rep = json.loads((lite0_export / A.GPU_REPORT).read_text())
    assert set(rep) == {A.FLOAT16_MODEL, A.INT8_MODEL}
    checks = gpu_export.analyzer_checks_ops()
    for name, r in rep.items():
        data = (lite0_export / name).read_bytes()
        a = gpu.parse_analyzer(gpu_export.analyzer_text(data))
        ops = [k for k, _, _ in gpu_export.file_ops(data)]
        assert list(a.ops) == ops and r["ops"] == len(ops)  # every op the Analyzer lists
        assert sum(r["delegated"].values()) + len(r["fallback"]) == len(ops)
        assert r["analyzer"]["ops"] == list(a.ops)
        if checks:  # an Analyzer that checks ops agrees with the table op by op
            assert {f["index"] for f in r["fallback"]} == {i for i, _ in a.flagged}
        else:  # it says "compatible" for anything: the report must say so
            assert r["analyzer"]["checks_ops"] is False and r["notes"]
        assert r["fallback"] == [] and r["partitions"] == 1 and r["fully_delegated"]
    assert rep[A.FLOAT16_MODEL]["delegated"]["DEQUANTIZE"] > 50  # the float16 weights


def test_gpu_table_matches_the_exported_int8_graph(lite0_export):
    from edgeeff.tflite import reader

    g = reader.read((lite0_export / A.INT8_MODEL).read_bytes())
    assert gpu.graph_fallbacks(g) == gpu.graph_fallbacks(graph(preset_spec("lite0"))) == []


@pytest.mark.parametrize("spec", [preset_spec("lite0"), preset_spec("b0"), preset_spec("lite2"),
                                  phi_spec(1.1, "efficientnet"), phi_spec(-4.0, "lite")],
                         ids=["lite0", "b0", "lite2", "effnet+1.1", "lite-4.0"])
def test_no_op_of_either_family_falls_back_on_the_gpu(spec):
    g = graph(spec, io="uint8", form="cpu")
    assert {op.kind for op in g.ops} <= set(gpu.GPU_OPS)
    assert gpu.graph_fallbacks(g) == []  # swish (LOGISTIC + MUL), SE's MEAN and broadcast MUL


def test_gpu_rules_reject_what_the_delegate_does_not_run():
    assert gpu.check_op("SEGMENT_SUM") is not None
    assert gpu.check_op("MUL", [(1, 1, 8, 1), (1, 8, 1, 1)]) is not None  # outer product
    assert gpu.check_op("MUL", [(1, 7, 7, 32), (1, 1, 1, 32)]) is None  # squeeze-excite
    assert gpu.check_op("ADD", [(1, 4, 4, 8), (3, 8)]) is not None
    assert gpu.check_op("DEQUANTIZE", [(8,)], ["int16"]) is not None
    rep = gpu.report("m", [("CONV_2D", [(1, 8, 8, 3)], ["float32"]), ("SEGMENT_SUM", [], []),
                           ("ADD", [(1, 8, 8, 3), (1, 8, 8, 3)], ["float32"] * 2)])
    assert [f.index for f in rep.fallback] == [1] and rep.partitions == 2
    assert "SEGMENT_SUM" in rep.summary()


def test_parse_analyzer_reads_flagged_ops():
    text = ("Subgraph#0 main(T#0) -> [T#2]\n  Op#0 CONV_2D(T#0) -> [T#1]\n"
            "  Op#1 SEGMENT_SUM(T#1, T#3) -> [T#2]\n"
            "GPU COMPATIBILITY WARNING: Not supported op SEGMENT_SUM\n\n"
            "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at "
            "nodes 1 with TFLite runtime version 2.x\n")
    a = gpu.parse_analyzer(text)
    assert a.ops == ("CONV_2D", "SEGMENT_SUM") and a.flagged == ((1, "Not supported op "
                                                                    "SEGMENT_SUM"),)
    assert not a.compatible


# --------------------------------------------------------------------------- fit for phones


@pytest.mark.parametrize("device", PHONES)
def test_fit_for_a_phone_picks_a_model_with_weights(device, tmp_path):
    out = tmp_path / "edgeeff.json"
    r = run_cli("fit", "--device", device, "--json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["weights"] in ("lite0", "lite1", "lite2")  # ImageNet weights exist
    assert "edgeeff train" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    if device == "pixel4-gpu":
        assert res["gpu_fallback_ops"] == []
        from edgeeff.export.request import ExportRequest

        req = ExportRequest(spec_file=str(out), out=tmp_path / "x").prepared()
        assert "float16" in req.formats  # the GPU profile asks for the float16 model
    else:
        assert "gpu_fallback_ops" not in res
    r = run_cli("fit", "--device", device, "--family", "lite", "--out", str(out))
    assert r.returncode == 0 and "edgeeff train" in r.stdout  # weightless: how to train it


@pytest.mark.parametrize("device,published_ms", [("pixel4-cpu", 6.5), ("pixel4-gpu", 6.0)])
def test_phone_profiles_give_the_published_lite0_latency(device, published_ms):
    from edgeeff.core import targets

    d = targets.load(device)
    assert d.kind == "phone" and d.latency_is_estimate and "README" in d.sources["latency"]
    assert abs(d.latency_ms(preset_spec("lite0")) / published_ms - 1) < 0.1
    assert ("float16" in d.formats) == (device == "pixel4-gpu")


def test_float16_flag_adds_the_format():
    from edgeeff.export.request import ExportRequest

    assert ExportRequest(preset="lite0", float16=True).formats == ("tflite", "float16")
    assert "float16" not in ExportRequest(preset="lite0").formats

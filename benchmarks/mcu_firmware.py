"""Fit's microcontroller picks, built into firmware: ELF flash and RAM against each profile.

For each bundled MCU profile and each of 2, 10 and 100 classes: ``fit`` picks a model (the
core's search, as ``edgeeff fit --device D --num-classes N``), the pick's int8 graph is
synthesized in the converter's form (``edgeeff.device.synth``: op for op what ``export
--format tflm`` ships, seeded random weights: sizes do not depend on them; no TensorFlow),
``edgeeff.export.tflm`` writes its TFLite Micro project (arena measured with tflite-micro on
this host, kTensorArenaSize from ``edgeeff.core.cost.tflm_reserved_arena``), and ``edgeeff
firmware`` builds it for the nearest Cortex-M with Arm GCC + CMSIS-NN and runs it under QEMU
where QEMU has a board, comparing the output with the .tflite's and reporting the arena TFLM
used on the 32-bit target. ESP32-S3 is Xtensa LX7: it is built as a Cortex-M7 (the closest
TFLM + optimized-kernel build here; Xtensa code sizes differ). RP2040 is Cortex-M0+: QEMU
has no such board, so it is built only.

Usage: python benchmarks/mcu_firmware.py [DEVICE ...] [--classes 2,10,100] [--no-run]
       [--work DIR] [--json]
Prints one Markdown table (and the JSON records with --json); a full run writes its section
of docs/benchmarks.md. A cold TFLM build is minutes per Cortex-M flavour (objects cached
under ~/.cache/edgeeff/tflm/ afterwards): run it under ``nice``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

DEVICES = {  # profile -> firmware target
    "stm32f746": "cortex-m7",
    "stm32h743": "cortex-m7",
    "esp32-s3": "cortex-m7",
    "nrf52840": "cortex-m4",
    "rp2040": "cortex-m0plus",
}
CLASSES = (2, 10, 100)

HEADER = ("| device | classes | built for | fit's pick: φ, px, head | MMACs | est. flash KB | "
          "fit's arena = kTensorArenaSize B | arena used on target B | ELF flash KB (/ board) | "
          "ELF static RAM KB (/ board) | run |")
RULE = "|" + "---|" * 11
NOTE = ("fit's arena is the RAM `fit` budgets on a microcontroller (`tflm_reserved_bytes`, "
        "edgeeff.core.cost.tflm_reserved_arena: TFLM's minimum + the margin, whole KB); the "
        "exported kTensorArenaSize must equal it. Arena used: `arena_used_bytes()` printed by the "
        "firmware under QEMU (32-bit target, CMSIS-NN scratch included). Flash = text + rodata + "
        "data of the ELF (the model, TFLM, newlib, and the firmware's embedded test image); static "
        "RAM = data + bss (the arena included; stack and heap on top). Synthesized int8 graphs "
        "with random weights (edgeeff.device.synth, the exporter's converter form): sizes do not "
        "depend on the weights. esp32-s3 is built as Cortex-M7 (it is Xtensa), rp2040 as "
        "Cortex-M0+ (no QEMU board: build only).")


def one(device: str, classes: int, work: Path, run: bool) -> dict:
    from edgeeff.core import targets
    from edgeeff.core.arch import expand
    from edgeeff.core.budget import Budgets
    from edgeeff.core.errors import EdgeeffError
    from edgeeff.core.fit import fit
    from edgeeff.core.fsutil import write_bytes_atomic
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.deploy import firmware as fw
    from edgeeff.device import synth
    from edgeeff.export import tflm

    target = DEVICES[device]
    rec: dict = {"device": device, "classes": classes, "target": target}
    dev = targets.load(device)
    try:
        res = fit(dev, Budgets.for_device(dev), num_classes=classes)
    except EdgeeffError as e:
        rec["error"] = str(e)
        return rec
    ch, spec = res.chosen, res.chosen.spec
    rec.update(model=spec.name, phi=spec.phi, family=spec.family, resolution=spec.resolution,
               head="scaled" if spec.scaled_head else "fixed",
               top_filters=expand(spec).top_filters, macs=ch.cost.macs,
               flash_est=ch.cost.flash_bytes, fit_arena=ch.ram_bytes,
               min_arena_est=ch.cost.tflm_arena_bytes, note=res.note)
    out = work / f"{device}-{classes}"
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model_int8_converter.tflite"
    write_bytes_atomic(model, synth.build(spec, form="converter"))
    t0 = time.perf_counter()
    try:
        arena = tflm.export(model, out / "tflm", spec.name, spec=spec, log=lambda m: None,
                            preprocessor=Preprocessor.for_spec(spec))
    except EdgeeffError as e:
        rec["error"] = f"export: {e}"
        return rec
    rec["export_s"] = round(time.perf_counter() - t0, 1)
    rec["kTensorArenaSize"] = arena.recommended_arena_bytes
    rec["min_arena_measured"] = arena.min_arena_bytes
    try:
        rec["firmware"] = fw.firmware(out, target, run=run, device=device)
    except EdgeeffError as e:
        rec["error"] = f"firmware: {e}"
    return rec


def row(rec: dict) -> str:
    head = f"| {rec['device']} | {rec['classes']} | {rec['target']} |"
    if "model" not in rec:
        return head + f" - | - | - | - | - | - | - | {rec.get('error', '')} |"
    kb = lambda n: f"{n / 1024:,.0f}"  # noqa: E731
    same = "=" if rec.get("kTensorArenaSize") == rec["fit_arena"] else "**≠**"
    pick = (f"{rec['family']} φ {rec['phi']:+.2f}, {rec['resolution']}, {rec['head']} "
            f"({rec['top_filters']})")
    cols = [pick, f"{rec['macs'] / 1e6:.1f}", kb(rec["flash_est"]),
            f"{rec['fit_arena']:,} {same} {rec.get('kTensorArenaSize', 0):,}"]
    f = rec.get("firmware")
    if f is None:
        return head + " " + " | ".join(cols + ["-", "-", "-", rec.get("error", "")]) + " |"
    s, d, r = f["sizes"], f["device"], f["run"] or {}

    def budget(used, have, ok, short):
        return f"{kb(used)} / {kb(have)} " + ("fits" if ok else f"**short {short} KB**")

    used = r.get("arena_used")
    cols.append(f"{used:,} ({100 * (1 - used / rec['fit_arena']):.1f} % spare)" if used else "-")
    cols.append(budget(s["flash"], d["flash_bytes"], d["flash_fits"], d["flash_short_kb"]))
    cols.append(budget(s["ram"], d["ram_bytes"], d["ram_fits"], d["ram_short_kb"]))
    if r.get("ran"):
        cols.append(f"{r['runner'].split()[-1]}: output "
                    f"{'equal' if r.get('output_equal') else 'DIFFERS'}"
                    + (f" ({r['error']})" if r.get("error") else ""))
    else:
        cols.append(f"not run ({r.get('why', 'no --run')})")
    return head + " " + " | ".join(cols) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("devices", nargs="*", metavar="DEVICE",
                    help=f"MCU profiles to build (default: all of {', '.join(DEVICES)}; only a "
                         "full run writes its section of docs/benchmarks.md)")
    ap.add_argument("--classes", default=",".join(map(str, CLASSES)),
                    help="class counts to fit for, comma-separated (default: %(default)s)")
    ap.add_argument("--no-run", action="store_true", help="build only, no QEMU run")
    ap.add_argument("--work", type=Path, metavar="DIR",
                    help="keep the specs, exports and firmware here (default: a temporary "
                         "directory)")
    ap.add_argument("--json", action="store_true", help="also print the JSON records")
    a = ap.parse_intermixed_args(argv)
    unknown = [d for d in a.devices if d not in DEVICES]
    if unknown:
        ap.error(f"unknown device {', '.join(unknown)} (choose from {', '.join(DEVICES)})")
    classes = tuple(int(c) for c in a.classes.split(","))
    names = a.devices or list(DEVICES)
    with tempfile.TemporaryDirectory(prefix="edgeeff-mcu-") as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        recs, lines = [], [HEADER, RULE]
        print("\n".join(lines), flush=True)
        for name in names:
            for n in classes:
                rec = one(name, n, work, not a.no_run)
                recs.append(rec)
                lines.append(row(rec))
                print(lines[-1], flush=True)
                if a.work:
                    (a.work / "records.json").write_text(json.dumps(recs, indent=1))
    if set(names) == set(DEVICES) and classes == CLASSES:  # a full run: its section
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _page import write_section

        write_section("mcu_firmware", "Fit's MCU picks as firmware (ELF flash and RAM)",
                      "\n".join(lines) + "\n\n" + NOTE, "python benchmarks/mcu_firmware.py")
    if a.json:
        print(json.dumps(recs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

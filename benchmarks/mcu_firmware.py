"""Fit's microcontroller picks, built into firmware: ELF flash and RAM against each profile.

For each bundled MCU profile: ``edgeeff fit --device D`` picks a model, ``edgeeff export
--format tflm`` exports it (random weights: the sizes do not depend on them), and ``edgeeff
firmware`` builds it for the nearest Cortex-M with Arm GCC + CMSIS-NN and runs it under QEMU
where QEMU has a board, comparing the output with the .tflite's. ESP32-S3 is Xtensa LX7: it is
built as a Cortex-M7 (the closest TFLM + optimized-kernel build here; Xtensa code sizes differ).
RP2040 is Cortex-M0+: QEMU has no such board, so it is built only.

Usage: python benchmarks/mcu_firmware.py [DEVICE ...] [--work DIR] [--json]
Prints one Markdown table (and the JSON records with --json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEVICES = {  # profile -> (firmware target, classes tried in order)
    "stm32h743": ("cortex-m7", (1000, 10)),
    "stm32f746": ("cortex-m7", (1000, 10)),
    "esp32-s3": ("cortex-m7", (1000, 10)),
    "nrf52840": ("cortex-m4", (1000, 10)),
    "rp2040": ("cortex-m0plus", (1000, 10)),
}


HEADER = ("| device | built for | fit's pick | flash KB (ELF / budget) | static RAM KB "
          "(ELF / budget) | build | run |")
NOTE = ("Flash = text + rodata + data of the ELF (the model, TFLM, newlib, and the firmware's "
        "embedded test image); static RAM = data + bss (the tensor arena, kTensorArenaSize, "
        "included; stack and heap on top). Random weights: sizes do not depend on them. "
        "esp32-s3 is built as Cortex-M7 (it is Xtensa), rp2040 as Cortex-M0+ (no QEMU board: "
        "build only).")


def cli(*args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeeff.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def one(device: str, work: Path) -> dict:
    target, tries = DEVICES[device]
    rec: dict = {"device": device, "target": target}
    spec = work / f"{device}.json"
    for classes in tries:
        r = cli("fit", "--device", device, "--num-classes", str(classes), "--out", str(spec),
                "--json")
        if r.returncode == 0:
            rec["classes"] = classes
            break
        rec.setdefault("fit_errors", []).append(r.stderr.strip().splitlines()[-1])
    else:
        return rec
    chosen = json.loads(r.stdout)
    rec["model"] = chosen["name"]
    rec["fit_estimate"] = {"tflm_arena_bytes": chosen["tflm_arena_bytes"],
                           "flash_bytes": chosen["flash_bytes"]}
    out = work / device
    t0 = time.perf_counter()
    r = cli("export", "--phi", str(chosen["phi"]), "--family", chosen["family"],
            "--num-classes", str(chosen["num_classes"]), "--resolution",
            str(chosen["resolution"]), "--weights", "none", "--int8", "--num-calib", "8",
            "--format", "tflm", "--out", str(out), "--force")
    rec["export_s"] = round(time.perf_counter() - t0, 1)
    if r.returncode != 0:
        rec["error"] = r.stderr.strip().splitlines()[-1]
        return rec
    r = cli("firmware", str(out), "--target", target, "--device", device, "--run", "--json")
    if not r.stdout.strip().startswith("{"):
        rec["error"] = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return rec
    rec["firmware"] = json.loads(r.stdout)
    return rec


def row(rec: dict) -> str:
    f = rec.get("firmware")
    if f is None:
        why = rec.get("error") or "; ".join(rec.get("fit_errors", []))
        return f"| {rec['device']} | {rec['target']} | - | - | - | - | {why} |"
    s, d, r = f["sizes"], f["device"], f["run"] or {}
    kb = lambda n: f"{n / 1024:,.0f}"  # noqa: E731

    def budget(used, have, ok, short):
        return f"{kb(used)} / {kb(have)} " + ("fits" if ok else f"**short {short} KB**")

    if r.get("ran"):
        run = (f"{r['runner'].split()[-1]}: output {'equal' if r.get('output_equal') else 'DIFFERS'}"
               f", arena {r.get('arena_used', 0):,} of {r.get('arena_size', 0):,} B")
    else:
        run = f"not run ({r.get('why', 'no --run')})"
    return (f"| {rec['device']} | {rec['target']} | {rec.get('model')} ({rec['classes']} cl.) | "
            f"{budget(s['flash'], d['flash_bytes'], d['flash_fits'], d['flash_short_kb'])} | "
            f"{budget(s['ram'], d['ram_bytes'], d['ram_fits'], d['ram_short_kb'])} | "
            f"{f['build']['seconds']:g} s | {run} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("devices", nargs="*", metavar="DEVICE",
                    help=f"MCU profiles to build (default: all of {', '.join(DEVICES)}; only a "
                         "full run writes its section of docs/benchmarks.md)")
    ap.add_argument("--work", type=Path, metavar="DIR",
                    help="keep the specs, exports and firmware here (default: a temporary "
                         "directory)")
    ap.add_argument("--json", action="store_true", help="also print the JSON records")
    a = ap.parse_intermixed_args(argv)  # devices before and after the options, as before
    unknown = [d for d in a.devices if d not in DEVICES]
    if unknown:
        ap.error(f"unknown device {', '.join(unknown)} (choose from {', '.join(DEVICES)})")
    as_json, work = a.json, a.work
    names = a.devices or list(DEVICES)
    with tempfile.TemporaryDirectory(prefix="edgeeff-mcu-") as tmp:
        work = work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        recs = []
        lines = [HEADER, "|---|---|---|---|---|---|---|"]
        print("\n".join(lines))
        for name in names:
            rec = one(name, work)
            recs.append(rec)
            lines.append(row(rec))
            print(lines[-1], flush=True)
    if set(names) == set(DEVICES):  # a full run: its section of docs/benchmarks.md
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _page import write_section

        write_section("mcu_firmware", "Fit's MCU picks as firmware (ELF flash and RAM)",
                      "\n".join(lines) + "\n\n" + NOTE, "python benchmarks/mcu_firmware.py")
    if as_json:
        print(json.dumps(recs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

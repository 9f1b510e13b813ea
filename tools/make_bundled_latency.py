"""Write the per-op ``[latency]`` table of every bundled profile (targets/*.toml) -- estimates.

No bundled board has been profiled yet, so these tables are estimates, labelled as such in
their ``estimate`` key, in ``edgeeff devices`` and in ``fit``'s latency basis, until someone runs
``edgeeff profile`` on the real board:

* CPU boards and phones (kind ``sbc``/``phone``): the per-op shape of a profile measured with
  ``edgeeff profile`` on some CPU (``--measured``; this repository's came from a 2-core x86-64
  machine, ai-edge-litert, 1 thread), every coefficient multiplied by one factor so that
  EfficientNet-Lite0 takes what the profile's ``int8_macs_per_s`` (its published-benchmark
  estimate) says. What the shape adds over MACs / throughput: squeeze-excite, swish, depthwise
  and per-op costs relative to the convolutions, which on x86 made the efficientnet family up
  to 2.3x dearer per MAC than lite (issue 11). Those ratios are x86's, not the board's.
* MCUs whose core has a calibrated cycles-per-instruction (edgeeff/data/mcu_cores.json; today
  Cortex-M4, so the nRF52840) and a known clock: the per-op instruction model of TFLite Micro
  + CMSIS-NN (:mod:`edgeeff.core.mcu_latency`, fitted on instructions counted per op under
  QEMU -icount by tools/mcu_op_counts.py) times cycles per instruction (fitted on published
  MLPerf Tiny board latencies by benchmarks/mcu_latency.py) over the clock, on the graph
  TFLite Micro runs (``graph_form = "converter"``). Still not measured on the board itself.
* Other MCUs (Cortex-M7, M33: no published TFLite Micro + CMSIS-NN latency calibrates their
  cycles per instruction; Cortex-M0+ and Xtensa: not counted at all) and accelerators: MACs
  only (``ns_per_mac`` on the MAC-carrying op types, the dense layer's by its weight bytes,
  nothing else), which is the flat ``int8_macs_per_s`` estimate in the per-op form (to
  0.1 %: the dense layer's biases), the reason in its ``estimate``. An assumed
  cycles-per-instruction is deliberately not used: it would look calibrated and is not.

Usage: python tools/make_bundled_latency.py --measured x86-1t.toml [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeeff.core import latency, mcu_latency, targets  # noqa: E402
from edgeeff.core.arch import preset_spec  # noqa: E402
from edgeeff.core.cost import cost  # noqa: E402

COUNTED_WITH = "90b983c2b + CMSIS-NN 4ab83cc3 (counted)"
MARK = "# ---- [latency]: written by tools/make_bundled_latency.py; estimates, see its docstring\n"
CPU_KINDS = ("sbc", "phone")
# interpreter threads each CPU profile's throughput estimate assumes (its sources.throughput)
THREADS = {"pi4": 4, "pi5": 4, "pi-zero-2w": 4, "android-midrange": 4}


def table_for(dev: targets.Device, measured: latency.LatencyModel) -> dict:
    lite0 = preset_spec("lite0")
    anchor_ms = 1000.0 * cost(lite0).macs / dev.int8_macs_per_s
    if dev.kind in CPU_KINDS:
        k = anchor_ms / measured.predict_ms(lite0)
        coefs = {t: {f: v * k for f, v in c.items()} for t, c in measured.coefficients.items()}
        model = latency.LatencyModel(
            coefs, measured.graph_s * k, threads=THREADS.get(dev.key), runtime=measured.runtime,
            runtime_version=measured.runtime_version, cpu=dev.name,
            estimate=(f"per-op shape measured on {measured.cpu} ({measured.runtime} "
                      f"{measured.runtime_version}, {measured.threads} thread"
                      f"{'' if measured.threads == 1 else 's'}), scaled "
                      f"x{k:.3g} so that Lite0 takes {anchor_ms:.1f} ms as int8_macs_per_s "
                      "estimates; profile the board to replace it"))
    else:
        counted = mcu_table(dev)
        if counted is not None:
            return counted.to_toml_dict()
        per_mac = 1.0 / dev.int8_macs_per_s
        coefs = {t: {"macs": per_mac} for t, feats in latency.OP_TYPES.items() if "macs" in feats}
        # a dense layer's MACs are its weights (its features have no MAC column)
        coefs["FULLY_CONNECTED"] = {"weight_bytes": per_mac}
        model = latency.LatencyModel(
            coefs, 0.0, threads=None, runtime="", runtime_version="", cpu=dev.name,
            estimate=(f"MACs only: int8_macs_per_s in the per-op form ({why_macs_only(dev)}); "
                      "profile the board to replace it"))
    assert abs(model.predict_ms(lite0) - anchor_ms) < 1e-3 * anchor_ms
    return model.to_toml_dict()


def why_macs_only(dev: targets.Device) -> str:
    """Why an MCU or accelerator profile keeps the flat MACs estimate."""
    if dev.kind != "mcu":
        return "no per-op measurement of this device exists"
    core = dev.firmware_target
    b = mcu_latency.board(dev.key)
    if core is None or b is None:
        return f"no core and clock for it in edgeeff/data/{mcu_latency.CORES_FILE}"
    if b["core"] != core:
        return (f"its {b['core']} is not the {core} build edgeeff makes for it, so that "
                "build's instruction counts do not apply")
    if mcu_latency.core_timing(core).cycles_per_instruction is None:
        counted = ("so QEMU instruction counts give no milliseconds" if core != "cortex-m0plus"
                   else "and QEMU has no Cortex-M0+ board to count instructions on")
        return (f"{core}: no published TFLite Micro + CMSIS-NN board latency calibrates its "
                f"cycles per instruction, {counted}")
    return f"no per-op instruction model counted on {core}"


def mcu_table(dev: targets.Device) -> latency.LatencyModel | None:
    """The counted-instructions table of an MCU whose core is calibrated, else None."""
    core = dev.firmware_target
    b = mcu_latency.board(dev.key)
    if core is None or b is None or b["core"] != core:
        return None
    cpi = mcu_latency.core_timing(core).cycles_per_instruction
    model = mcu_latency.stored(core)
    if cpi is None or model is None:
        return None
    clock = b["clock_hz"]
    v = model.validation
    return model.latency_model(
        cpi, clock, threads=None, runtime="tflite-micro", runtime_version=COUNTED_WITH,
        cpu=f"{dev.name} ({core} at {clock / 1e6:g} MHz)",
        validation={"core": core, "cycles_per_instruction": cpi, "clock_hz": clock,
                    **{k: v[k] for k in ("held_out", "held_out_max_abs_error")
                       if v.get(k) is not None}},
        estimate=(f"TFLite Micro + CMSIS-NN instructions per op, counted under QEMU -icount "
                  f"on {core} (tools/mcu_op_counts.py), x {cpi:g} cycles per instruction "
                  f"(fitted on MLPerf Tiny's published board latencies of 2020's TFLite Micro: "
                  f"likely high for today's, see edgeeff/data/{mcu_latency.CORES_FILE}) at "
                  f"{clock / 1e6:g} MHz; profile the board to replace it"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measured", required=True, help="a profile written by 'edgeeff profile'")
    ap.add_argument("--check", action="store_true", help="only say which files would change")
    a = ap.parse_args()
    measured = targets.load(a.measured).latency_model
    if measured is None or measured.estimate:
        sys.exit(f"{a.measured} has no measured [latency] table")
    changed = 0
    for path in sorted((ROOT / "targets").glob("*.toml")):
        text = path.read_text(encoding="utf-8")
        if MARK not in text and "[latency]" in text:  # its own table (e.g. published figures)
            print(f"kept {path.name}: its [latency] is not this tool's")
            continue
        head = text.split(MARK)[0].rstrip("\n") + "\n"
        dev = targets.load(str(path))
        body = targets.dumps({"latency": table_for(dev, measured)})
        new = head + "\n" + MARK + body
        if new != text:
            changed += 1
            print(("would update " if a.check else "updated ") + path.name)
            if not a.check:
                path.write_text(new, encoding="utf-8")
    print(f"{changed} file(s) {'to change' if a.check else 'changed'}")


if __name__ == "__main__":
    main()

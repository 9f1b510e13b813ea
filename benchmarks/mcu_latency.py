"""Microcontroller milliseconds from instruction counts, checked against published MLPerf Tiny
board measurements.

For each MLPerf Tiny reference int8 model in ``--models DIR`` (default ../shared/mlperf-tiny;
the models are not in git and nothing is downloaded: put ``pretrainedResnet_quant.tflite``,
``kws_ref_model.tflite``, ``vww_96_int8.tflite`` and ``ad01_int8.tflite`` from
github.com/mlcommons/tiny ``benchmark/training/*/trained_models/`` there), the firmware
harness ``edgeeff firmware --run`` uses is built for the published board's core and run under
QEMU with ``-icount`` (deterministic: instructions, per op and in total). The per-core model is
cycles = cycles-per-instruction x instructions; cycles-per-instruction is fitted (geometric
mean) on the ``calibrate_on`` models of benchmarks/mlperf_tiny_published.json and the other
models are predicted at the board's clock and compared with the published latency (target
+-30 %).

The ``newer_stack`` figures (a later TFLite Micro + CMSIS-NN than the 2020 one MLPerf Tiny
v0.5's reference used; today: tflite-micro's ``person_detect.tflite`` timed on an STM32F413ZH,
from a GitHub issue comment) are counted the same way when their model is in ``--models``,
and printed with the cycles per instruction they imply. They neither calibrate nor count as
held out: they are not controlled measurements. They show how far the 2020 library's figures,
and so the calibration, are from today's library.

Usage: python benchmarks/mcu_latency.py [--models DIR] [--no-page]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._page import write_section  # noqa: E402

PUBLISHED = Path(__file__).with_name("mlperf_tiny_published.json")
TARGET = 0.30


def count(model: Path, core: str, work: Path) -> dict:
    """Instructions of one invoke of ``model`` on ``core``, counted by edgeeff's firmware
    harness under QEMU -icount."""
    from edgeeff.deploy import firmware as fw
    from edgeeff.export import tflm
    from edgeeff.tflite import reader

    out = work / model.stem
    folder = out / "tflm"
    folder.mkdir(parents=True, exist_ok=True)
    name = model.stem.replace("-", "_")
    rec = tflm.export(model, folder, name)
    if not (folder / "test_input.h").is_file():  # not an image classifier: a zero input
        tflm.write_project(folder, name, list(rec.kernels), rec.recommended_arena_bytes)
        g = reader.read(model.read_bytes())
        t = g.tensors[g.inputs[0]]
        n = math.prod(t.shape) * (1 if t.dtype in ("int8", "uint8") else 4)
        (folder / "test_input.h").write_text(
            "#pragma once\n"
            f"constexpr unsigned int kTestInputLen = {n};\n"
            "alignas(16) const unsigned char g_test_input[kTestInputLen] = {0};\n"
            "constexpr unsigned int kExpectedOutputLen = 0;\n"
            "const unsigned char g_expected_output[1] = {0};\n")
    try:
        return fw.counts(out, core)
    except fw.NotCounted as e:
        sys.exit(f"{model.name}: {e}")


def _row(s: dict, core: str, pred: float, role: str) -> str:
    err = pred / s["latency_ms"] - 1
    return (f"| {s['benchmark']} ({s['network']}) | {s['board']} ({core}, "
            f"{s['clock_hz'] / 1e6:g} MHz) | {s['instructions']:,} | {s['latency_ms']} | "
            f"{pred:.1f} | {err:+.1%} | {role} |")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=str(ROOT.parent / "shared" / "mlperf-tiny"))
    ap.add_argument("--no-page", action="store_true")
    a = ap.parse_args(argv)
    pub = json.loads(PUBLISHED.read_text())
    d = Path(a.models)
    rows = [s for s in pub["submissions"] if (d / s["model"]).is_file()]
    newer = [s for s in pub.get("newer_stack", []) if (d / s["model"]).is_file()]
    if not rows:
        names = ", ".join(sorted({s["model"] for s in pub["submissions"]}))
        print(f"skip: no MLPerf Tiny models in {d}: put {names} there (from github.com/"
              "mlcommons/tiny benchmark/training/*/trained_models/); nothing is downloaded")
        return 0
    with tempfile.TemporaryDirectory(prefix="mcu-latency-") as w:
        for s in rows + newer:
            c = count(d / s["model"], s["core"], Path(w))
            s["instructions"] = c["instructions"]
            s["cycles_published"] = s["latency_ms"] / 1000 * s["clock_hz"]
            s["cpi_published"] = s["cycles_published"] / c["instructions"]
            print(f"{s['benchmark']}: {c['instructions']:,} instructions on {s['core']}; "
                  f"published {s['latency_ms']} ms at {s['clock_hz'] / 1e6:g} MHz = "
                  f"{s['cpi_published']:.2f} cycles per instruction", flush=True)
    lines = ["| benchmark | board (core, clock) | instructions | published ms | predicted ms | "
             "error | role |", "|---|---|---|---|---|---|---|"]
    results = []
    for core in sorted({s["core"] for s in rows}):
        mine = [s for s in rows if s["core"] == core]
        cal = [s for s in mine if s["benchmark"] in pub["calibrate_on"]]
        if not cal:
            print(f"{core}: none of the calibration models {pub['calibrate_on']} present")
            continue
        cpi = math.exp(sum(math.log(s["cpi_published"]) for s in cal) / len(cal))
        print(f"{core}: {cpi:.3f} cycles per counted instruction (geometric mean over "
              f"{', '.join(s['benchmark'] for s in cal)})")
        for s in mine:
            pred = cpi * s["instructions"] / s["clock_hz"] * 1000
            err = pred / s["latency_ms"] - 1
            role = "calibration" if s in cal else "held out"
            if s not in cal:
                results.append(abs(err) <= TARGET)
            lines.append(_row(s, core, pred, role))
        for s in (s for s in newer if s["core"] == core):
            pred = cpi * s["instructions"] / s["clock_hz"] * 1000
            lines.append(_row(s, core, pred, "later library (not held out): implies "
                              f"{s['cpi_published']:.2f} cycles per instruction"))
    print("\n".join(lines))
    held = (f"{sum(results)} of {len(results)} held-out models within +-30 % of the published "
            "latency" if results else "no held-out model")
    print(held)
    if not a.no_page:
        body = ("\n".join(lines) + f"\n\n**{held}.** Published: {rows[0]['framework']} "
                f"({rows[0]['round']}). Ours: {pub['ours']}.\n\n"
                + "".join(f"Later library: {s['board']}, {s['framework']}; "
                          f"{s['kind']} ({s['url']}); clock {s['clock_note']}. "
                          f"Model: {s['model_source']}.\n\n" for s in newer)
                + f"{pub['newer_stack_about']}\n\n{pub['missing']}")
        write_section("mcu_latency", "Microcontroller latency from QEMU instruction counts",
                      body, "python benchmarks/mcu_latency.py --models DIR")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Estimated vs measured microcontroller memory: fit's analytic figures against tflite-micro.

For each model: build (random weights), convert to full int8 with a few calibration images,
then measure (a) the smallest tensor arena that allocates in tflite-micro's Python interpreter
(bisection, in a subprocess) and (b) the .tflite size. Prints both next to the estimates from
edgeeff.cost and their ratios. Usage: python benchmarks/mcu_ram.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from edgeeff.core.arch import phi_spec, preset_spec

MODELS = [
    phi_spec(-8, "lite", 10), phi_spec(-6, "lite", 10), phi_spec(-6, "lite", 1000),
    phi_spec(-4, "lite", 10), phi_spec(-3, "lite", 100), phi_spec(-7, "efficientnet", 10),
    phi_spec(-5, "efficientnet", 1000), preset_spec("lite0", num_classes=10, resolution=96),
]


def measure(spec, workdir: Path) -> dict:
    from edgeeff.core.cost import cost
    from edgeeff.export import from_spec as frontend_from_spec
    from edgeeff.export.tflite import convert_int8
    from edgeeff.export.tflm import measure_arena
    from edgeeff.model.calibrate import load_calibration

    fe = frontend_from_spec(spec, "none", log=lambda m: None)
    cs = load_calibration(None, fe.preprocessor, 4, holdout=False)
    model = convert_int8(fe.model, cs.images, fe.preprocessor)
    path = workdir / f"{spec.name}-{spec.num_classes}.tflite"
    path.write_bytes(model)
    c = cost(spec)
    arena = measure_arena(path)["min_arena_bytes"]
    return {"model": spec.name, "classes": spec.num_classes, "est_arena": c.tflm_arena_bytes,
            "arena": arena, "est_flash": c.flash_bytes, "flash": len(model)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"only the first 3 of the {len(MODELS)} models")
    a = ap.parse_args(argv)
    from edgeeff.model.quiet import import_tensorflow

    import_tensorflow()
    models = MODELS[:3] if a.quick else MODELS
    print(f"{'model':<34} {'classes':>7} {'est arena':>10} {'TFLM arena':>10} {'ratio':>6} "
          f"{'est flash':>10} {'.tflite':>10} {'ratio':>6}")
    worst_ram = worst_flash = 0.0
    with tempfile.TemporaryDirectory() as d:
        for spec in models:
            r = measure(spec, Path(d))
            ram, flash = r["est_arena"] / r["arena"], r["est_flash"] / r["flash"]
            worst_ram, worst_flash = max(worst_ram, abs(ram - 1)), max(worst_flash, abs(flash - 1))
            print(f"{r['model']:<34} {r['classes']:>7} {r['est_arena']:>10,} {r['arena']:>10,} "
                  f"{ram:>6.3f} {r['est_flash']:>10,} {r['flash']:>10,} {flash:>6.3f}", flush=True)
    print(f"worst deviation: arena {worst_ram:.1%}, flash {worst_flash:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

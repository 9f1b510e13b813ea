"""Where package data, the bundled data folders (``targets/``, ``calibration/``) and the
cache are.

Package data is found one way, :func:`package_data` (``importlib.resources``): files inside a
package (``edgeeff.data``'s labels and accuracy table, ``edgeeff.export``'s TFLite Micro
project templates) and the data folders, which a wheel installs as ``edgeeff.targets`` /
``edgeeff.calibration`` (see pyproject's package-dir); in a source checkout or an editable
install those two are the top-level folders next to the package (:func:`data_dir`).
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

DATA_PACKAGE = "edgeeff.data"  # ImageNet labels and wnids, the accuracy table


def package_data(package: str, *parts: str) -> Traversable:
    """The file or folder ``parts`` inside the installed package ``package`` (``"edgeeff.data"``,
    ``"edgeeff.export"``, ...): read it with ``read_text``/``read_bytes``, list it with
    ``iterdir``."""
    res = resources.files(package)
    for part in parts:
        res = res.joinpath(part)
    return res


def data_dir(name: str) -> Path:
    """The bundled ``targets`` or ``calibration`` folder: the checkout's top-level folder, else
    the installed ``edgeeff.<name>`` package."""
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    try:
        return Path(str(package_data(f"edgeeff.{name}")))
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

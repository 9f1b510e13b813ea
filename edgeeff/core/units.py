"""Byte sizes as people write them: ``320KB``, ``1MB``, ``2.5 MiB``, ``4096``.

KB/MB/GB are binary (1024-based) like the datasheets and TFLite Micro arena sizes they are
compared with; KiB/MiB/GiB are accepted as synonyms.
"""

from __future__ import annotations

import math
import re

import click

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """Bytes in ``text``; ValueError with a readable reason on anything else."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise ValueError(f"not a size: {text!r} (use e.g. 320KB, 1MB, 2GB)")
        value, unit = float(m.group(1)), m.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (use B, KB, MB or GB)")
    if not math.isfinite(value):
        raise ValueError(f"not a size: {text!r} (a finite number of bytes)")
    if value < 0:
        raise ValueError(f"size must not be negative: {text!r}")
    if not math.isfinite(value * _UNITS[unit]):
        raise ValueError(f"size too large: {text!r}")
    return int(round(value * _UNITS[unit]))


class FiniteFloat(click.FloatRange):
    """A command-line number (a budget, a rate, a fraction): click's ``FloatRange``, which lets
    ``nan`` and ``inf`` through its bounds (every comparison with NaN is false), made to refuse
    them. Without bounds it is a plain finite float."""

    name = "float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def format_size(n: int | float) -> str:
    n = float(n)
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"

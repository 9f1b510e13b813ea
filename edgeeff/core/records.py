"""Reading typed records back from JSON: the one rule every report's ``from_dict`` shares."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def known(cls: type, d: dict) -> dict[str, Any]:
    """``d``'s entries that dataclass ``cls`` declares as fields: a file written by an older
    version (fewer keys: those fields keep their defaults) or a newer one (extra keys: dropped)
    still loads."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}

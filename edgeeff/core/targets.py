"""Device profiles: ``targets/*.toml`` shipped with edgeeff, or a user's own file by path."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgeeff.core.arch import FAMILIES
from edgeeff.core.artifacts import FORMATS
from edgeeff.core.data import data_dir
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.units import parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

KINDS = ("sbc", "accelerator", "phone", "mcu")

REQUIRED = ("name", "kind", "ram", "flash", "int8_macs_per_s", "family", "formats", "sources")
OPTIONAL = ("max_latency_ms", "max_mflops", "description")
SOURCE_KEYS = ("ram", "flash", "throughput")


@dataclass(frozen=True)
class Device:
    key: str  # file stem, e.g. "pi4"
    name: str
    kind: str
    ram_bytes: int
    flash_bytes: int
    int8_macs_per_s: float
    family: str
    formats: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)
    max_latency_ms: float | None = None
    max_mflops: float | None = None
    path: str = ""

    def latency_ms(self, macs: int) -> float:
        return 1000.0 * macs / self.int8_macs_per_s

    def to_dict(self) -> dict:
        return {
            "key": self.key, "name": self.name, "kind": self.kind, "ram_bytes": self.ram_bytes,
            "flash_bytes": self.flash_bytes, "int8_macs_per_s": self.int8_macs_per_s,
            "family": self.family, "formats": list(self.formats), "sources": dict(self.sources),
            "max_latency_ms": self.max_latency_ms, "max_mflops": self.max_mflops,
        }


def _bundled_dir() -> Path:
    return data_dir("targets")


def bundled_names() -> list[str]:
    return sorted(p.name[:-5] for p in _bundled_dir().iterdir() if p.name.endswith(".toml"))


def parse_profile(text: str, key: str, where: str) -> Device:
    """Validate one profile; every problem names ``where`` and the offending key."""
    def bad(k: str, why: str) -> EdgeeffError:
        return EdgeeffError(f"{where}: key '{k}': {why}")

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EdgeeffError(f"{where}: not valid TOML: {e}") from None
    for k in data:
        if k not in REQUIRED and k not in OPTIONAL:
            raise bad(k, f"unknown key (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    for k in REQUIRED:
        if k not in data:
            raise bad(k, "missing")
    sizes = {}
    for k in ("ram", "flash"):
        try:
            sizes[k] = parse_size(data[k])
        except ValueError as e:
            raise bad(k, str(e)) from None
        if sizes[k] <= 0:
            raise bad(k, "must be positive")
    rate = data["int8_macs_per_s"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
        raise bad("int8_macs_per_s", "must be a positive number")
    if data["kind"] not in KINDS:
        raise bad("kind", f"{data['kind']!r} is not one of {', '.join(KINDS)}")
    if data["family"] not in FAMILIES:
        raise bad("family", f"{data['family']!r} is not one of {', '.join(FAMILIES)}")
    fmts = data["formats"]
    if not isinstance(fmts, list) or not fmts or any(f not in FORMATS for f in fmts):
        raise bad("formats", f"must be a non-empty list drawn from {', '.join(FORMATS)}")
    src = data["sources"]
    if not isinstance(src, dict):
        raise bad("sources", "must be a table")
    for k in src:
        if k not in SOURCE_KEYS:
            raise bad(f"sources.{k}", f"unknown key (allowed: {', '.join(SOURCE_KEYS)})")
    for k in SOURCE_KEYS:
        if not isinstance(src.get(k), str) or not src[k].strip():
            raise bad(f"sources.{k}", "missing: say where this number comes from")
    opt = {}
    for k in ("max_latency_ms", "max_mflops"):
        if k in data:
            v = data[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise bad(k, "must be a positive number")
            opt[k] = float(v)
    if not isinstance(data["name"], str) or not data["name"].strip():
        raise bad("name", "must be a non-empty string")
    return Device(
        key=key, name=data["name"], kind=data["kind"], ram_bytes=sizes["ram"],
        flash_bytes=sizes["flash"], int8_macs_per_s=float(rate), family=data["family"],
        formats=tuple(fmts), sources=dict(src), path=where, **opt,
    )


def load(name_or_path: str) -> Device:
    """A bundled profile by name (``pi4``) or a user's profile by path (``./board.toml``)."""
    looks_like_path = name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path
    if looks_like_path:
        p = Path(name_or_path)
        if not p.is_file():
            raise EdgeeffError(f"device profile not found: {name_or_path}")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise EdgeeffError(f"cannot read device profile {name_or_path}: {e}") from None
        return parse_profile(text, p.stem, str(p))
    key = name_or_path.lower()
    if key not in bundled_names():
        raise EdgeeffError(
            f"unknown device {name_or_path!r} (known: {', '.join(bundled_names())}; "
            "or pass a profile path such as ./board.toml)"
        )
    res = _bundled_dir() / f"{key}.toml"
    return parse_profile(res.read_text(encoding="utf-8"), key, f"targets/{key}.toml")


def load_all() -> list[Device]:
    return [load(n) for n in bundled_names()]

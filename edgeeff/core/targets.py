"""Device profiles: ``targets/*.toml`` shipped with edgeeff, or a user's own file by path.

An MCU profile may reserve flash and RAM for the runtime itself (``runtime_flash = "136KB"``,
``runtime_ram = "4KB"``, with ``sources.runtime`` saying where the figures come from): TFLite
Micro's interpreter and kernels take flash next to the model's flatbuffer and static RAM next to
the arena, so :class:`edgeeff.core.budget.Budgets` checks the model against what is left.

A profile may carry a ``[latency]`` table (written by ``edgeeff profile`` on the device): a
per-op latency model (:mod:`edgeeff.core.latency`) that :meth:`Device.latency_ms` uses for a
spec or graph instead of the flat ``int8_macs_per_s`` estimate. Its schema::

    [latency]
    form = "per-op-linear"          # the model form
    version = 2
    threads = 2                     # interpreter threads it was measured with
    runtime = "ai_edge_litert"      # and runtime_version = "2.3.0"
    runtime_version = "2.3.0"
    cpu = "Cortex-A72, 4 cores, aarch64"
    estimate = "..."                # only in a table not measured on the board: how it was made
    graph_form = "converter"        # optional: the graph a spec is laid out as (default "cpu";
                                    # a microcontroller runs the converter's, edgeeff.core.graph)
    us_per_graph = 35.0             # per-invoke constant
    [latency.validation]            # free-form record: numbers and strings
    within_10pct = 0.95             # cross-validated share of graphs predicted within +-10 %
    median_abs_error = 0.03
    [latency.ops.CONV_2D_1x1]       # one table per op type (latency.OP_TYPES)
    ns_per_mac = 0.08               # and/or ns_per_act_byte, ns_per_weight_byte, us_per_op
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgeeff.core.arch import FAMILIES, ModelSpec
from edgeeff.core.artifacts import FORMATS
from edgeeff.core.data import data_dir
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.graph import graph
from edgeeff.core.latency import LatencyModel
from edgeeff.core.units import parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

KINDS = ("sbc", "accelerator", "phone", "mcu")

REQUIRED = ("name", "kind", "ram", "flash", "int8_macs_per_s", "family", "formats", "sources")
OPTIONAL = ("max_latency_ms", "max_mflops", "description", "latency", "runtime_flash",
            "runtime_ram", "firmware_target", "camera")
# the builds `edgeeff firmware` makes (edgeeff.deploy.firmware.TARGETS): a microcontroller
# profile names the one its board runs, so `firmware --device` needs no --target
FIRMWARE_TARGETS = ("host", "cortex-m7", "cortex-m4", "cortex-m33", "cortex-m0plus")
# the demo's camera on the board (`edgeeff bundle`'s run.sh): picamera2 on a Raspberry Pi with a
# CSI camera, else the first V4L2 device
CAMERAS = ("picamera", "0")
SOURCE_KEYS = ("ram", "flash", "throughput")
OPTIONAL_SOURCE_KEYS = ("latency", "latency_budget", "runtime")


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
    latency_model: LatencyModel | None = None  # the profile's [latency] table, if any
    description: str | None = None
    # flash and static RAM the on-device runtime itself takes (TFLite Micro's code, rodata and
    # data; its data and bss outside the arena): fit checks the model against what is left
    runtime_flash_bytes: int = 0
    runtime_ram_bytes: int = 0
    firmware_target: str | None = None  # the `edgeeff firmware` build for this board
    camera: str = "0"  # the demo's --source on the board (CAMERAS)

    def latency_ms(self, x) -> float:
        """Estimated int8 latency, ms, of a :class:`ModelSpec` or cost ``Graph`` (the per-op
        model where the profile has one, else MACs over ``int8_macs_per_s``), or of a plain
        number of MACs (always the flat estimate)."""
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return 1000.0 * x / self.int8_macs_per_s
        if self.latency_model is not None:
            return self.latency_model.predict_ms(x)
        g = graph(x) if isinstance(x, ModelSpec) else x
        return 1000.0 * sum(op.macs for op in g.ops) / self.int8_macs_per_s

    @property
    def latency_basis(self) -> str:
        """How :meth:`latency_ms` estimates a spec's latency."""
        if self.latency_model is None:
            return "MACs / int8_macs_per_s"
        m = self.latency_model
        if m.estimate:  # the table says how it was made
            return f"per-op estimate, not measured on this board: {m.estimate}"
        return f"per-op model measured with {m.runtime} {m.runtime_version}, {m.threads} threads"

    @property
    def latency_is_estimate(self) -> bool:
        """True until the board itself was profiled (``edgeeff profile``)."""
        return self.latency_model is None or bool(self.latency_model.estimate)

    def to_dict(self) -> dict:
        d = {
            "key": self.key, "name": self.name, "kind": self.kind, "ram_bytes": self.ram_bytes,
            "flash_bytes": self.flash_bytes, "int8_macs_per_s": self.int8_macs_per_s,
            "family": self.family, "formats": list(self.formats), "sources": dict(self.sources),
            "max_latency_ms": self.max_latency_ms, "max_mflops": self.max_mflops,
            "runtime_flash_bytes": self.runtime_flash_bytes,
            "firmware_target": self.firmware_target, "camera": self.camera,
            "runtime_ram_bytes": self.runtime_ram_bytes,
        }
        if self.latency_model is not None:
            d["latency"] = self.latency_model.to_toml_dict()
        return d


def positive_number(v) -> bool:
    """``v`` is a budget or a rate: an int or float (not a bool), finite and above zero. NaN
    and infinity fail here, where a bare ``v <= 0`` lets them through."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v > 0)


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
    if not positive_number(rate):
        raise bad("int8_macs_per_s", "must be a positive finite number")
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
        if k not in SOURCE_KEYS + OPTIONAL_SOURCE_KEYS:
            raise bad(f"sources.{k}", "unknown key (allowed: "
                                      f"{', '.join(SOURCE_KEYS + OPTIONAL_SOURCE_KEYS)})")
    for k in SOURCE_KEYS:
        if not isinstance(src.get(k), str) or not src[k].strip():
            raise bad(f"sources.{k}", "missing: say where this number comes from")
    opt = {}
    for k, total in (("runtime_flash", "flash"), ("runtime_ram", "ram")):
        if k not in data:
            continue
        try:
            n = parse_size(data[k])
        except ValueError as e:
            raise bad(k, str(e)) from None
        if n >= sizes[total]:
            raise bad(k, f"must be less than {total} ({data[total]}): it is reserved out of it")
        if not isinstance(src.get("runtime"), str) or not src["runtime"].strip():
            raise bad("sources.runtime", f"missing: say where {k} comes from")
        opt[f"{k}_bytes"] = n
    for k in ("max_latency_ms", "max_mflops"):
        if k in data:
            v = data[k]
            if not positive_number(v):
                raise bad(k, "must be a positive finite number")
            opt[k] = float(v)
    if not isinstance(data["name"], str) or not data["name"].strip():
        raise bad("name", "must be a non-empty string")
    if "description" in data and not isinstance(data["description"], str):
        raise bad("description", "must be a string")
    if "firmware_target" in data:
        if data["firmware_target"] not in FIRMWARE_TARGETS:
            raise bad("firmware_target", f"must be one of {', '.join(FIRMWARE_TARGETS)}")
        opt["firmware_target"] = data["firmware_target"]
    if "camera" in data:
        if data["camera"] not in CAMERAS:
            raise bad("camera", f"must be one of {', '.join(CAMERAS)}")
        opt["camera"] = data["camera"]
    model = None
    if "latency" in data:
        if not isinstance(data["latency"], dict):
            raise bad("latency", "must be a table")
        try:
            model = LatencyModel.from_toml_dict(data["latency"])
        except ValueError as e:
            k, _, why = str(e).partition(": ")
            raise bad(k, why) from None
        if "latency" in src and (not isinstance(src["latency"], str) or not src["latency"]):
            raise bad("sources.latency", "must say where the latency model comes from")
    return Device(
        key=key, name=data["name"], kind=data["kind"], ram_bytes=sizes["ram"],
        flash_bytes=sizes["flash"], int8_macs_per_s=float(rate), family=data["family"],
        formats=tuple(fmts), sources=dict(src), path=where, latency_model=model,
        description=data.get("description"), **opt,
    )


# --------------------------------------------------------------------------- writing


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"cannot write {v} to TOML")
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        out = v.replace("\\", "\\\\").replace('"', '\\"')
        out = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
                      for c in out)
        return f'"{out}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ValueError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    ok = k and all(c.isalnum() or c in "-_" for c in k)
    return k if ok else _toml_value(k)


def dumps(data: dict, comments: dict[str, str] | None = None) -> str:
    """A profile (nested dicts of str/int/float/bool/list) as TOML; ``comments`` maps top-level
    keys to a trailing comment. Tables follow the plain keys, nested ones as dotted headers."""
    comments = comments or {}
    lines: list[str] = []

    def emit(d: dict, prefix: str) -> None:
        plain = [(k, v) for k, v in d.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in d.items() if isinstance(v, dict)]
        if prefix and (plain or not tables):
            lines.append("")
            lines.append(f"[{prefix}]")
        for k, v in plain:
            if v is None:
                continue
            c = comments.get(k) if not prefix else None
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}" + (f"  # {c}" if c else ""))
        for k, v in tables:
            emit(v, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k))

    emit(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


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

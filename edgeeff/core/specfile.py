"""The spec file ``fit`` writes and ``export``/``train``/``info`` read (JSON)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from edgeeff.core.arch import ModelSpec, phi_spec, preset_spec
from edgeeff.core.artifacts import SPEC_FILE
from edgeeff.core.cost import Cost, cost
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import write_json_atomic
from edgeeff.core.preprocess import Preprocessor

FORMAT = "edgeeff-spec"
VERSION = 1


def summary(spec: ModelSpec, c: Cost | None = None, device: str | None = None,
            binding: str | None = None) -> dict:
    """The keys ``fit --json`` and ``info --json`` share."""
    c = c or cost(spec)
    return {
        "name": spec.name,
        "phi": spec.phi,
        "preset": spec.preset,
        "family": spec.family,
        "depth": spec.depth,
        "width": spec.width,
        "resolution": spec.resolution,
        "num_classes": spec.num_classes,
        "macs": c.macs,
        "mflops": round(c.mflops, 1),
        "params": c.params,
        "flash_bytes": c.flash_bytes,
        "peak_ram_bytes": c.peak_ram_bytes,
        "peak_ram_op": c.peak_ram_op,
        "tflm_arena_bytes": c.tflm_arena_bytes,
        "device": device,
        "binding": binding,
    }


def write(path: str | Path, spec: ModelSpec, extra: dict | None = None) -> None:
    doc = {"format": FORMAT, "version": VERSION, "spec": spec.to_dict(),
           "preprocessing": Preprocessor.for_spec(spec).to_dict(), **(extra or {})}
    write_json_atomic(path, doc)


def read(path: str | Path) -> tuple[ModelSpec, dict]:
    """(spec, whole document); EdgeeffError with a one-line reason on any problem."""
    p = Path(path)
    if not p.is_file():
        raise EdgeeffError(f"spec file not found: {path} (run 'edgeeff fit' first or pass --preset)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeeffError(f"{path}: not a readable JSON spec file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(
            doc.get("spec"), dict):
        raise EdgeeffError(f"{path}: not an edgeeff spec file (no '\"format\": \"{FORMAT}\"')")
    if doc.get("version") != VERSION:
        raise EdgeeffError(f"{path}: spec version {doc.get('version')!r} is not supported")
    try:
        spec = ModelSpec.from_dict(doc["spec"])
    except (ValueError, TypeError) as e:
        raise EdgeeffError(f"{path}: {e}") from None
    return spec, doc


def trained_artifacts(path: str | Path) -> dict | None:
    """Checkpoint and labels recorded by 'edgeeff train' in its spec file (absolute paths)."""
    p = Path(path)
    if not p.is_file():
        return None
    _, doc = read(p)
    t = doc.get("trained")
    if not isinstance(t, dict):
        return None
    return {"weights": str(p.parent / t["weights"]), "labels": str(p.parent / t["labels"])}


def resolve(spec_file: str | None = None, preset: str | None = None, phi: float | None = None,
            family: str | None = None, num_classes: int | None = None,
            resolution: int | None = None, default: str | None = SPEC_FILE) -> ModelSpec:
    """One spec from exactly one of --spec / --preset / --phi (with overrides); without any,
    the spec file ``default`` (``edgeeff.json``, written by ``fit``), or an error when None."""
    chosen = [n for n, v in (("--spec", spec_file), ("--preset", preset), ("--phi", phi))
              if v is not None]
    if len(chosen) > 1:
        raise EdgeeffError(f"give only one of {', '.join(chosen)}")
    if not chosen and default is None:
        raise EdgeeffError("give one of --preset, --phi or --spec")
    try:
        if preset is not None:
            spec = preset_spec(preset, resolution=resolution)
        elif phi is not None:
            spec = phi_spec(phi, family or "efficientnet")
        else:
            spec, _ = read(spec_file or default)
        if family is not None and family != spec.family:
            raise EdgeeffError(f"--family {family} conflicts with the spec's {spec.family}")
        if num_classes is not None:
            spec = spec.with_classes(num_classes)
        if resolution is not None and preset is None:
            spec = replace(spec, resolution=resolution)
    except ValueError as e:
        raise EdgeeffError(str(e)) from None
    return spec


def info(spec_file: str | None = None, preset: str | None = None, phi: float | None = None,
         family: str | None = None, num_classes: int | None = None,
         resolution: int | None = None) -> tuple[ModelSpec, dict]:
    """(spec, summary) for ``edgeeff info``; a fitted spec file adds its device and binding."""
    spec = resolve(spec_file, preset, phi, family, num_classes, resolution, default=None)
    device = binding = None
    if spec_file:
        fitted = read(spec_file)[1].get("fit") or {}
        device, binding = fitted.get("device"), fitted.get("binding")
    return spec, summary(spec, device=device, binding=binding)

"""The spec file (``edgeeff.json``): one typed document, one reader, one writer.

``fit`` writes it with the choice it made (:class:`Fitted`), ``train`` with what it trained
and measured (:class:`Trained`); ``export``, ``info``, ``train`` and ``fit --trained`` read it
back through :func:`read`. The document carries a ``version``; a file written in an older
layout is brought up to the current one in :func:`read` and nowhere else.

Layouts:

* version 1: as version 2, but ``trained.top1`` may be missing (only ``val_accuracy``, a
  fraction) and ``trained.data`` may be relative to the working directory ``train`` ran in
  rather than to the spec file's folder.
* version 2: ``trained.data`` is relative to the spec file's folder (or absolute), so a
  project moved or cloned as a whole keeps working from any working directory.
* version 3: as version 2; ``spec.head`` (``"scaled"``/``"fixed"``) may override the family's
  head (a lite network whose top conv scales with width). A file without it has the family's
  head, so versions 1 and 2 read unchanged; an older edgeeff refuses a version-3 file in one
  line instead of building the wrong head.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from edgeeff.core.arch import ModelSpec, phi_spec, preset_spec, top_filters
from edgeeff.core.artifacts import SPEC_FILE
from edgeeff.core.cost import Cost, cost
from edgeeff.core.errors import EdgeeffError, FieldError
from edgeeff.core.fsutil import write_json_atomic
from edgeeff.core.preprocess import Preprocessor

FORMAT = "edgeeff-spec"
VERSION = 3
READS = (1, 2, 3)  # the layouts :func:`read` understands


class SpecFileError(EdgeeffError):
    """A spec file that cannot be used: ``path`` and ``reason`` (one line)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class SpecFileNotFound(FieldError):
    """No spec file at ``path``; the message names ``preset`` as the other way to give a spec
    (the CLI shows its flag)."""

    def __init__(self, path: str | Path):
        super().__init__(f"spec file not found: {path} (run 'edgeeff fit' first or pass "
                         "{preset})", "preset")
        self.path = str(path)


@dataclass(frozen=True)
class Fitted:
    """What ``edgeeff fit`` chose and why: the device, the binding budget, the rest of what
    ``fit --json`` prints about the pick (``choice``), and the device profile it fitted to."""

    device: str
    binding: str
    choice: dict = field(default_factory=dict)
    device_profile: dict = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: dict, device_profile: dict) -> Fitted:
        """From ``FitResult.summary()`` (which holds ``device`` and ``binding`` among the rest)."""
        rest = {k: v for k, v in summary.items() if k not in ("device", "binding")}
        return cls(str(summary["device"]), str(summary["binding"]), rest, device_profile)

    def to_dict(self) -> dict:
        return {**self.choice, "device": self.device, "binding": self.binding,
                "device_profile": self.device_profile}


@dataclass(frozen=True)
class Trained:
    """What ``edgeeff train`` wrote and measured. ``weights``, ``labels`` and ``data`` are
    relative to the spec file's folder (or absolute)."""

    weights: str
    labels: str
    data: str | None = None  # the training image folder
    top1: float | None = None  # validation top-1, percent
    top1_basis: str | None = None
    val_accuracy: float | None = None  # the same, as a fraction
    val_images: int | None = None
    train_images: int | None = None
    classes: list[str] | None = None
    weights_from: str | None = None
    epochs_run: int | None = None
    crop_fraction: float | None = None  # its evaluation crop (absent: the family default)
    recipe: dict | None = None  # the training recipe's settings (edgeeff.model.train.Recipe)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SpecFile:
    """One spec file. ``path`` is where :func:`read` found it (never written)."""

    spec: ModelSpec
    fit: Fitted | None = None
    trained: Trained | None = None
    version: int = VERSION
    path: Path | None = field(default=None, compare=False)

    @property
    def folder(self) -> Path:
        return self.path.parent if self.path is not None else Path(".")

    def trained_weights(self) -> str | None:
        return None if self.trained is None else str(self.folder / self.trained.weights)

    def trained_labels(self) -> str | None:
        return None if self.trained is None else str(self.folder / self.trained.labels)

    def training_data(self) -> Path | None:
        """The recorded training data folder, or None when none was recorded or it is gone."""
        if self.trained is None or not self.trained.data:
            return None
        p = self.folder / self.trained.data  # an absolute ``data`` stays itself
        return p if p.is_dir() else None

    def preprocessor(self) -> Preprocessor:
        """How pixels reach this model: the family's, with a trained model's own crop."""
        pp = Preprocessor.for_spec(self.spec)
        cf = None if self.trained is None else self.trained.crop_fraction
        return pp if cf is None else replace(pp, crop_fraction=float(cf))

    def to_dict(self) -> dict:
        doc = {"format": FORMAT, "version": VERSION, "spec": self.spec.to_dict(),
               "preprocessing": self.preprocessor().to_dict()}
        if self.fit is not None:
            doc["fit"] = self.fit.to_dict()
        if self.trained is not None:
            doc["trained"] = self.trained.to_dict()
        return doc


def write(path: str | Path, doc: SpecFile) -> None:
    """The one writer: ``doc`` in the current layout, atomically."""
    write_json_atomic(path, doc.to_dict())


def read(path: str | Path) -> SpecFile:
    """The one reader: any supported layout -> :class:`SpecFile` in the current one.

    :class:`SpecFileNotFound` or :class:`SpecFileError` (one line) on any problem.
    """
    p = Path(path)
    if not p.is_file():
        raise SpecFileNotFound(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"), parse_constant=_not_json)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecFileError(path, f"not a readable JSON spec file ({e})") from None
    except ValueError as e:  # NaN / Infinity
        raise SpecFileError(path, str(e)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(
            doc.get("spec"), dict):
        raise SpecFileError(path, f"not an edgeeff spec file (no '\"format\": \"{FORMAT}\"')")
    version = doc.get("version")
    if isinstance(version, bool) or version not in READS:
        raise SpecFileError(path, f"spec version {version!r} is not supported (this edgeeff "
                                  f"reads {', '.join(map(str, READS))})")
    try:
        spec = ModelSpec.from_dict(doc["spec"])
    except (ValueError, TypeError) as e:
        raise SpecFileError(path, str(e)) from None
    fit = _section(Fitted, doc.get("fit"), path, "fit")
    trained = doc.get("trained")
    if version == 1 and isinstance(trained, dict):
        trained = _trained_v1(trained, p)
    return SpecFile(spec, fit, _section(Trained, trained, path, "trained"), VERSION, p)


def _not_json(name: str):
    """``json.loads``'s hook for the ``NaN`` / ``Infinity`` / ``-Infinity`` literals Python
    writes and RFC 8259 has not: a spec figure must be a number."""
    raise ValueError(f"{name} is not a JSON number (every figure in a spec file must be finite)")


def _trained_v1(t: dict, path: Path) -> dict:
    """Version 1's ``trained``: ``top1`` from ``val_accuracy`` where only that was recorded,
    and a ``data`` folder recorded relative to ``train``'s working directory made absolute."""
    t = dict(t)
    acc = t.get("val_accuracy")
    if "top1" not in t and isinstance(acc, (int, float)) and not isinstance(acc, bool):
        t["top1"] = 100.0 * float(acc)
    data = t.get("data")
    if isinstance(data, str) and data and not Path(data).is_absolute() \
            and not (path.parent / data).is_dir() and Path(data).is_dir():
        t["data"] = str(Path(data).resolve())
    return t


_NUMBER = (int, float)
_STR_LIST = "list of strings"
# every field of a section, and what JSON type it must have
_TYPES = {
    Fitted: {"device": str, "binding": str, "device_profile": dict},
    Trained: {"weights": str, "labels": str, "data": str, "top1": _NUMBER, "top1_basis": str,
              "val_accuracy": _NUMBER, "val_images": int, "train_images": int,
              "classes": _STR_LIST, "weights_from": str, "epochs_run": int,
              "crop_fraction": _NUMBER, "recipe": dict},
}


def _section(cls, raw, path, name: str):
    """``raw`` (a JSON object, or None) -> ``cls``, every field checked against its type. A
    :class:`Trained` ignores keys it does not know (a newer edgeeff's additions); a
    :class:`Fitted` keeps them in ``choice``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecFileError(path, f"'{name}' is not an object")
    kw = {}
    for key, want in _TYPES[cls].items():
        v = raw.get(key)
        if v is None:
            continue
        ok = (isinstance(v, list) and all(isinstance(x, str) for x in v) if want is _STR_LIST
              else isinstance(v, want) and not isinstance(v, bool))
        if not ok:
            raise SpecFileError(path, f"'{name}.{key}' has the wrong type ({type(v).__name__})")
        if isinstance(v, float) and not math.isfinite(v):
            raise SpecFileError(path, f"'{name}.{key}' is {v}, not a finite number")
        kw[key] = float(v) if want is _NUMBER else v
    missing = [f.name for f in fields(cls) if f.name not in kw and f.name in _TYPES[cls]
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise SpecFileError(path, f"'{name}' lacks {', '.join(missing)}")
    if cls is Fitted:
        kw["choice"] = {k: v for k, v in raw.items() if k not in _TYPES[Fitted]}
    return cls(**kw)


def summary(spec: ModelSpec, c: Cost | None = None, device: str | None = None,
            binding: str | None = None) -> dict:
    """The keys ``fit --json`` and ``info --json`` share: a spec's figures, and the device and
    binding budget a fit recorded (None where there is none)."""
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
        "tflm_reserved_bytes": c.tflm_reserved_bytes,
        "head": "scaled" if spec.scaled_head else "fixed",
        "top_filters": top_filters(spec),
        "device": device,
        "binding": binding,
    }


def choose(spec_file: str | None = None, preset: str | None = None, phi: float | None = None,
           family: str | None = None, num_classes: int | None = None,
           resolution: int | None = None,
           default: str | None = SPEC_FILE) -> tuple[ModelSpec, SpecFile | None]:
    """One spec from exactly one of ``spec_file`` / ``preset`` / ``phi`` (with the
    ``family``, ``num_classes`` and ``resolution`` overrides); without any, the spec file
    ``default`` (``edgeeff.json``, written by ``fit``), or an error when None. Also the spec
    file it came from (None for ``preset`` / ``phi``). Conflicting or missing choices raise a
    :class:`~edgeeff.core.errors.FieldError` naming these parameters (the CLI shows its
    flags)."""
    chosen = [n for n, v in (("spec_file", spec_file), ("preset", preset), ("phi", phi))
              if v is not None]
    if len(chosen) > 1:
        raise FieldError("give only one of " + ", ".join("{" + n + "}" for n in chosen),
                         *chosen)
    if not chosen and default is None:
        raise FieldError("give one of {preset}, {phi} or {spec_file}", "preset", "phi",
                         "spec_file")
    doc = None
    try:
        if preset is not None:
            spec = preset_spec(preset, resolution=resolution)
        elif phi is not None:
            spec = phi_spec(phi, family or "efficientnet")
        else:
            doc = read(spec_file or default)
            spec = doc.spec
        if family is not None and family != spec.family:
            raise FieldError(f"{{family}} {family} conflicts with the spec's {spec.family}",
                             "family")
        if num_classes is not None:
            spec = spec.with_classes(num_classes)
        if resolution is not None and preset is None:
            spec = replace(spec, resolution=resolution)
    except ValueError as e:
        raise EdgeeffError(str(e)) from None
    return spec, doc


def resolve(spec_file: str | None = None, preset: str | None = None, phi: float | None = None,
            family: str | None = None, num_classes: int | None = None,
            resolution: int | None = None, default: str | None = SPEC_FILE) -> ModelSpec:
    """:func:`choose`'s spec alone."""
    return choose(spec_file, preset, phi, family, num_classes, resolution, default)[0]

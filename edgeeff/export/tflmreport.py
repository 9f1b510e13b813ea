"""The TFLite Micro export's report (``tflm/arena.json``): one typed record, its writer and its
reader.

:func:`edgeeff.export.tflm.export` writes it beside the C sources; :mod:`edgeeff.deploy.firmware`
reads it back to compile the kernels it lists and to check the firmware's output against the
test input's expected one. The JSON keys are the dataclass fields (the docs and the model card
name them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from edgeeff.core import artifacts as A
from edgeeff.core import records
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import write_json_atomic


@dataclass(frozen=True)
class TFLMTestInput:
    """The image the firmware classifies as its self-check, and the output it must give."""

    image: str
    dtype: str
    shape: tuple[int, ...]
    expected_output: tuple[int, ...]
    expected_with: str
    output_dtype: str
    top_class: int
    output_hash: str  # FNV-1a of the expected output's bytes, 8 hex digits
    # the largest difference the optimized kernels make (absent: not run)
    optimized_kernels_max_diff: int | None = None
    # whether tflite-micro's Python interpreter gave the expected output (absent: not run)
    tflm_python_equal: bool | None = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["shape"], d["expected_output"] = list(self.shape), list(self.expected_output)
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> TFLMTestInput:
        kw = records.known(cls, d)
        kw["shape"] = tuple(kw.get("shape", ()))
        kw["expected_output"] = tuple(kw.get("expected_output", ()))
        return cls(**{"image": "", "dtype": "", "expected_with": "", "output_dtype": "",
                      "top_class": -1, "output_hash": "", **kw})


@dataclass(frozen=True)
class TFLMReport:
    """What ``export --format tflm`` measured and wrote: the arena (measured by tflite-micro's
    Python interpreter, else edgeeff's estimate: ``measured_with`` says which), the reserved
    ``kTensorArenaSize``, the op resolver and the kernel sources the firmware compiles."""

    min_arena_bytes: int | None = None
    estimated_arena_bytes: int | None = None
    arena_margin: float = 0.0
    recommended_arena_bytes: int | None = None
    model_bytes: int | None = None
    resolver: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()
    framework_exclude: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    measured_with: str = ""
    test_input: TFLMTestInput | None = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("resolver", "kernels", "framework_exclude", "files"):
            d[k] = list(d[k])
        if self.test_input is None:
            del d["test_input"]
        else:
            d["test_input"] = self.test_input.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TFLMReport:
        """Any keys it knows (an older or hand-written file may lack some)."""
        kw = records.known(cls, d)
        for k in ("resolver", "kernels", "framework_exclude", "files"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if isinstance(kw.get("test_input"), dict):
            kw["test_input"] = TFLMTestInput.from_dict(kw["test_input"])
        return cls(**kw)


def write(folder: str | Path, report: TFLMReport) -> Path:
    """``folder/arena.json``, atomically."""
    path = Path(folder) / A.TFLM_ARENA
    write_json_atomic(path, report.to_dict())
    return path


def read(folder: str | Path) -> TFLMReport:
    """``folder/arena.json`` -> :class:`TFLMReport`; a one-line error when it is unreadable."""
    path = Path(folder) / A.TFLM_ARENA
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeeffError(f"{path}: not a readable TFLite Micro report ({e}): re-run "
                           "'edgeeff export --format tflm'") from None
    if not isinstance(doc, dict):
        raise EdgeeffError(f"{path}: not a TFLite Micro report (not a JSON object)")
    try:
        return TFLMReport.from_dict(doc)
    except (TypeError, ValueError) as e:
        raise EdgeeffError(f"{path}: not a TFLite Micro report ({e})") from None

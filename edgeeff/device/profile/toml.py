"""The device profile ``edgeeff profile`` writes: the ``targets/*.toml`` schema (RAM and flash
budgets from this machine, the fitted int8 throughput) plus the ``[latency]`` table."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from edgeeff.core import targets
from edgeeff.core.fsutil import write_text_atomic
from edgeeff.device.profile.host import board_name, cpu_model, meminfo
from edgeeff.device.profile.solve import ProfileResult
from edgeeff.device.runtime import runtime_info


def _mib(n: int) -> str:
    return f"{max(1, n // (1024 * 1024))}MB"


def device_profile(res: ProfileResult, name: str | None = None, folder: str = ".") -> dict:
    """A complete device profile (the ``targets/*.toml`` schema plus ``[latency]``)."""
    today = datetime.date.today().isoformat()
    mem = meminfo()
    total = mem.get("MemTotal", 0)
    if total:
        ram = total // 4
        ram_src = (f"measured by edgeeff profile on {today}: MemTotal {_mib(total)} in "
                   "/proc/meminfo; a quarter of it budgeted for the model's activations")
    else:
        ram = 512 * 1024 * 1024
        ram_src = f"edgeeff profile on {today}: no /proc/meminfo; a default of 512 MB"
    free = shutil.disk_usage(folder).free
    flash = max(min(free // 10, 1024**3), 1024 * 1024)
    flash_src = (f"measured by edgeeff profile on {today}: {_mib(free)} free where the profile "
                 "was written; a tenth of it (at most 1 GB) budgeted for the model file")
    rt, ver = runtime_info()
    n_whole = sum(1 for m in res.measurements if m.probe.n_ops is None)
    th = (f"{res.threads} thread{'s' if res.threads != 1 else ''}" if res.threads
          else "the runtime's default threads")
    cv = res.model.validation
    return {
        "name": name or board_name(),
        "kind": "sbc",
        "ram": _mib(ram),
        "flash": _mib(flash),
        "int8_macs_per_s": float(f"{res.int8_macs_per_s:.4g}"),
        "family": "lite",
        "formats": ["tflite"],
        "description": f"measured by edgeeff profile on {today} ({cpu_model()})",
        "sources": {
            "ram": ram_src,
            "flash": flash_src,
            "throughput": (f"measured by edgeeff profile on {today}: median MACs/s of "
                           f"{n_whole} synthetic int8 EfficientNets, {rt} {ver}, {th}"),
            "latency": (f"measured by edgeeff profile on {today}: per-op model fitted to "
                        f"{len(res.measurements)} synthetic int8 graphs, {rt} {ver}, {th}; "
                        f"cross-validated {cv.get('within_10pct', 0):.0%} within +-10 %; "
                        "wall-clock p50 of frames as edgeeff bench times them"
                        + (f"; the machine was busy: threads waited for a CPU "
                           f"{cv.get('runqueue_share', 0):.0%} of the time" if cv.get("busy")
                           else "")),
        },
        "latency": res.model.to_toml_dict(),
    }


def write_profile(path: str, res: ProfileResult, name: str | None = None) -> str:
    """Write the profile as TOML (atomically); returns the text. It parses back with
    :func:`edgeeff.core.targets.parse_profile` (checked before writing)."""
    folder = str(Path(path).resolve().parent)
    d = device_profile(res, name, folder)
    head = ("# Device profile written by 'edgeeff profile' (use: edgeeff fit --device "
            f"{path}).\n# RAM and flash are budgets: edit them to taste.\n")
    text = head + targets.dumps(d)
    targets.parse_profile(text, Path(path).stem, path)
    write_text_atomic(path, text)
    return text

"""What ``edgeeff profile`` and ``fit --measure`` need to know about the machine they run on:
the CPU's name, how many cores this process may use (the thread cap), memory and the board."""

from __future__ import annotations

import os
import platform


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one (a container or
    ``taskset`` can restrict it below the machine's count), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(len(os.sched_getaffinity(0)), 1)
        except OSError:
            pass
    return max(os.cpu_count() or 1, 1)


def cap_threads(threads: int | None, cores: int | None = None) -> tuple[int | None, str | None]:
    """(threads to time with, a one-line note when that is fewer than asked).

    More interpreter threads than cores do not make an invoke faster: they take turns, and the
    run-queue correction would subtract the very waits that oversubscription causes, reporting
    a latency the machine cannot reach. ``None`` (the runtime's default) is left alone."""
    if threads is None:
        return None, None
    cores = usable_cores() if cores is None else max(int(cores), 1)
    if threads <= cores:
        return threads, None
    return cores, (f"timing with {cores} thread{'s' if cores != 1 else ''}, not {threads}: "
                   f"this machine runs {cores} at once (more would take turns on the cores "
                   "and time slower than the device does)")


def cpu_model() -> str:
    """The CPU's name (``/proc/cpuinfo``; else ``platform``) and its core count."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and val.strip():
                    name = val.strip()
                    if key == "model name":
                        break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name}, {os.cpu_count() or '?'} cores, {platform.machine()}"


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty where there is none)."""
    out = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                k, _, v = line.partition(":")
                parts = v.split()
                if parts and parts[0].isdigit():
                    out[k.strip()] = int(parts[0]) * (1024 if parts[-1].lower() == "kb" else 1)
    except OSError:
        pass
    return out


def board_name() -> str:
    """The device tree's model (a Raspberry Pi names itself there), else host and CPU."""
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(p, "rb") as f:
                name = f.read().rstrip(b"\0").decode(errors="replace").strip()
            if name:
                return name
        except OSError:
            continue
    return f"{platform.node() or 'this machine'} ({cpu_model().split(',')[0]})"

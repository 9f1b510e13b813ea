"""``edgeeff profile``: measure this device's int8 latency per op type and write a device profile.

Runs on the device with nothing but ``[runtime]`` (a TFLite runtime and numpy): the graphs
are synthesised by :mod:`edgeeff.device.synth` (the exporter's int8 graph with random weights,
no TensorFlow), timed with the local interpreter, and a per-op latency model
(:mod:`edgeeff.core.latency`) is fitted to the whole-graph latencies by non-negative least
squares. The profile written is a complete device profile (``edgeeff fit --device FILE``):
RAM and flash from the system, ``int8_macs_per_s`` fitted, and a ``[latency]`` table with the
per-op coefficients and their cross-validated error.

One module per job: :mod:`.design` (which graphs), :mod:`.timing` (how one graph is timed;
also ``fit --measure``'s timer), :mod:`.fit` (timing the design, drift correction, the fit),
:mod:`.host` (the machine: CPU, usable cores and the thread cap, memory, board name) and
:mod:`.toml` (the profile file).
"""

from edgeeff.device.profile.design import (
    CLASSES,
    MAX_MACS,
    MIN_MACS,
    QUICK_MAX_MACS,
    REFERENCE,
    SPECS,
    Probe,
    cut_points,
    design,
    design_specs,
    random_specs,
    sample_spec,
)
from edgeeff.device.profile.host import board_name, cap_threads, cpu_model, meminfo, usable_cores
from edgeeff.device.profile.solve import (
    BUDGET_S,
    DEADLINE_S,
    Drift,
    Measurement,
    ProfileResult,
    busy_note,
    measure,
    noise_warning,
    profile,
    solve_measurements,
)
from edgeeff.device.profile.timing import (
    SpecTimer,
    Timer,
    time_interleaved,
    time_model,
    time_model_stats,
    time_spec,
)
from edgeeff.device.profile.toml import device_profile, write_profile
from edgeeff.device.runtime import runtime_info

__all__ = [
    "BUDGET_S", "CLASSES", "DEADLINE_S", "MAX_MACS", "MIN_MACS", "QUICK_MAX_MACS", "REFERENCE",
    "SPECS", "Drift", "Measurement", "Probe", "ProfileResult", "SpecTimer", "Timer",
    "board_name", "busy_note", "cap_threads", "cpu_model", "cut_points", "design",
    "design_specs", "device_profile", "measure", "meminfo", "noise_warning",
    "profile", "random_specs", "runtime_info", "sample_spec", "solve_measurements",
    "time_interleaved",
    "time_model", "time_model_stats", "time_spec", "usable_cores", "write_profile",
]

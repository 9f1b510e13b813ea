"""``edgeeff profile``: measure this device's int8 latency per op type and write a device profile.

Runs on the device with nothing but ``[runtime]`` (a TFLite runtime and numpy): the graphs
are synthesised by :mod:`edgeeff.device.synth` (the exporter's int8 graph with random weights,
no TensorFlow), timed with the local interpreter, and a per-op latency model
(:mod:`edgeeff.core.latency`) is fitted to the whole-graph latencies by non-negative least
squares. The profile written is a complete device profile (``edgeeff fit --device FILE``):
RAM and flash from the system, ``int8_macs_per_s`` fitted, and a ``[latency]`` table with the
per-op coefficients and their cross-validated error.

The design: 44 specs whose family, width, depth, resolution and number of classes vary
independently (a 5-D Halton sequence, so that the per-op-type features are not collinear as
they are along compound scaling), each timed whole and cut after the stages nearest a third and
two thirds of its MACs (prefix graphs), which separates the early high-resolution ops from the
late many-channel ones: 132 graphs.

Timing: the median of up to 40 invokes, each invoke's wall time net of the time the
interpreter's threads spent runnable but waiting for a CPU (``/proc/self/task/*/schedstat``;
zero on an idle device, and skipped where the file is missing), and every graph scaled by how a
fixed reference graph, timed right after it, compares with its median over the run (cancels
drifts in clock speed and background load). A timing budget (110 s; 12 s for ``--quick``)
sets the number of invokes on slow devices, and no new graph starts after 170 s (25 s).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from edgeeff.core import latency
from edgeeff.core.arch import ModelSpec
from edgeeff.core.cost import Graph, graph

# --------------------------------------------------------------------------- timing


def runtime_info() -> tuple[str, str]:
    """(name, version) of the TFLite runtime the interpreter comes from."""
    from importlib.metadata import PackageNotFoundError, version

    from edgeeff.device.runtime import _interpreter_class

    _, _, name = _interpreter_class()
    for dist in (name.replace("_", "-"), name):
        try:
            return name, version(dist)
        except PackageNotFoundError:
            continue
    return name, ""


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


class _SchedStat:
    """Run-queue delay of this process's threads (``/proc/self/task/*/schedstat``, Linux).

    On a machine shared with other work, an invoke's wall time includes the time its threads
    were runnable but waiting for a CPU; subtracting the largest such wait of any thread gives
    the latency the device has when it is not shared (and changes nothing on an idle device).
    Where the file is missing (another OS, a kernel without schedstats) nothing is subtracted.
    """

    def __init__(self) -> None:
        self.fds: list[int] = []
        try:
            for tid in os.listdir("/proc/self/task"):
                self.fds.append(os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY))
            self.read()
        except (OSError, ValueError, IndexError):
            self.close()

    def read(self) -> list[int]:
        out = []
        for fd in self.fds:
            try:
                out.append(int(os.pread(fd, 64, 0).split()[1]))
            except (OSError, ValueError, IndexError):  # the thread has gone
                out.append(-1)
        return out

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


class Timer:
    """One interpreter, input filled, ready to be invoked and timed."""

    def __init__(self, model: bytes, threads: int | None, warmup: int = 2):
        from edgeeff.device.runtime import load_interpreter

        self.it, self.runtime, _ = load_interpreter(model, threads)
        d = self.it.get_input_details()[0]
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, d["shape"], dtype=np.uint8)  # int8 input: the same bits
        self.it.set_tensor(d["index"], pixels.view(d["dtype"]) if np.dtype(d["dtype"]).itemsize
                           == 1 else pixels.astype(d["dtype"]))
        for _ in range(max(warmup, 1)):  # the first invoke also starts the worker threads
            self.it.invoke()
        self.sched = _SchedStat()

    def run(self, runs: int, net: bool = True) -> np.ndarray:
        """``runs`` invokes, ms: wall time minus the longest run-queue wait of a thread
        (``net``), or plain wall time."""
        out = np.empty(runs)
        invoke, read = self.it.invoke, self.sched.read
        for i in range(runs):
            a = read() if net else ()
            t = time.perf_counter()
            invoke()
            wall = time.perf_counter() - t
            if net:
                b = read()
                wait = max((y - x for x, y in zip(a, b) if x >= 0 and y >= 0), default=0)
                wall = max(wall - wait / 1e9, 0.0)
            out[i] = wall * 1000.0
        return out

    def close(self) -> None:
        self.sched.close()


def time_model(model: bytes, threads: int | None = 2, runs: int = 15, warmup: int = 2,
               budget_s: float | None = None) -> float:
    """Latency of one invoke, ms: the median of ``runs`` invokes, each net of the time its
    threads waited for a CPU (see :class:`_SchedStat`). ``budget_s`` caps the time spent after
    the first three invokes (fewer runs, at least five, on a slow device)."""
    t = Timer(model, threads, warmup)
    try:
        first = t.run(3)
        if budget_s is not None:
            runs = max(5, min(runs, int(budget_s / max(float(np.median(first)) / 1000.0, 1e-6))))
        rest = t.run(max(runs - 3, 0))
    finally:
        t.close()
    return float(np.median(np.concatenate([first, rest])))


def time_interleaved(models: list[bytes], threads: int | None = 2, rounds: int = 15,
                     runs: int = 3, warmup: int = 2, net: bool = True) -> list[float]:
    """Like :func:`time_model` for several models, their rounds interleaved (A B C A B C ...),
    so that a busy spell on the machine hits all of them alike: for A/B comparisons."""
    timers = [Timer(m, threads, warmup) for m in models]
    res: list[list[np.ndarray]] = [[] for _ in timers]
    try:
        for _ in range(rounds):
            for t, r in zip(timers, res):
                r.append(t.run(runs, net))
    finally:
        for t in timers:
            t.close()
    return [float(np.median(np.concatenate(r))) for r in res]


def time_spec(spec: ModelSpec, threads: int | None = 2, **kw) -> float:
    """Measured int8 latency of ``spec`` on this machine's runtime, ms (synthetic weights; for
    ``fit --measure``)."""
    from edgeeff.device import synth

    return time_model(synth.build(spec, metadata=False), threads, **kw)


class SpecTimer:
    """``fit --measure``'s timer: :func:`time_spec`, once per distinct graph. Neighbouring phi
    often round to the same network; timing it again would only show the machine's noise as
    two different latencies for one model."""

    def __init__(self, threads: int | None = 2, **kw):
        self.threads, self.kw = threads, kw
        self.cache: dict[tuple, float] = {}

    @staticmethod
    def key(spec: ModelSpec) -> tuple:
        from edgeeff.core.cost import graph

        g = graph(spec)
        return tuple((op.kind, g.shape(op.output), op.weights) for op in g.ops)

    def __call__(self, spec: ModelSpec) -> float:
        k = self.key(spec)
        if k not in self.cache:
            self.cache[k] = time_spec(spec, self.threads, **self.kw)
        return self.cache[k]


# --------------------------------------------------------------------------- the design


def _halton(i: int, base: int) -> float:
    f, r = 1.0, 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


@dataclass(frozen=True)
class Probe:
    """One graph to time: ``spec``'s int8 graph, whole or cut after ``n_ops`` ops."""

    spec: ModelSpec
    n_ops: int | None = None
    group: int = 0  # probes of one spec share a group (kept together in cross-validation)

    def graph(self) -> Graph:
        g = graph(self.spec)
        if self.n_ops is None:
            return g
        return Graph(tensors=g.tensors, ops=g.ops[:self.n_ops])

    @property
    def label(self) -> str:
        s = self.spec
        cut = "" if self.n_ops is None else f" [:{self.n_ops}]"
        return (f"{s.family[:4]} w{s.width:.2f} d{s.depth:.2f} r{s.resolution} "
                f"c{s.num_classes}{cut}")


MIN_MACS, MAX_MACS = 10e6, 2.5e9  # the design's range (a little wider than it is used for)
CLASSES = (10, 100, 1000)


def sample_spec(u: tuple[float, float, float, float, float]) -> ModelSpec:
    """A spec from five numbers in [0, 1): family, width, depth, resolution, classes."""
    family = "lite" if u[0] < 0.5 else "efficientnet"
    width = 0.25 * 8.0 ** u[1]  # 0.25 .. 2.0, log-uniform
    depth = 0.25 * 12.0 ** u[2]  # 0.25 .. 3.0
    res = int(round((64 + u[3] * (384 - 64)) / 8)) * 8
    classes = CLASSES[min(int(u[4] * len(CLASSES)), len(CLASSES) - 1)]
    return ModelSpec(family=family, width=round(width, 4), depth=round(depth, 4),
                     resolution=res, num_classes=classes)


def design_specs(n: int, offset: int = 1, lo: float = MIN_MACS, hi: float = MAX_MACS
                 ) -> list[ModelSpec]:
    """``n`` specs from a Halton sequence (bases 2, 3, 5, 7, 11) whose MACs lie in [lo, hi]."""
    from edgeeff.core.cost import cost

    out, i = [], offset
    while len(out) < n:
        u = tuple(_halton(i, b) for b in (2, 3, 5, 7, 11))
        i += 1
        s = sample_spec(u)
        if lo <= cost(s).macs <= hi:
            out.append(s)
    return out


def random_specs(n: int, seed: int, lo: float = 20e6, hi: float = 2e9,
                 classes: tuple[int, ...] = (10, 1000)) -> list[ModelSpec]:
    """``n`` random specs (both families, independent width/depth/resolution or compound
    scaling, MACs in [lo, hi]): held-out tests of a latency model."""
    from edgeeff.core.arch import phi_spec
    from edgeeff.core.cost import cost

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        fam = ("lite", "efficientnet")[len(out) % 2]
        c = int(rng.choice(classes))
        if rng.random() < 0.5:
            s = phi_spec(round(float(rng.uniform(-8, 4)), 2), fam, c)
        else:
            s = sample_spec((0.0 if fam == "lite" else 0.9, *rng.random(3), 0.0))
            s = ModelSpec(family=fam, width=s.width, depth=s.depth, resolution=s.resolution,
                          num_classes=c)
        if lo <= cost(s).macs <= hi:
            out.append(s)
    return out


def cut_points(spec: ModelSpec) -> list[int]:
    """Where to cut ``spec``'s graph for prefix probes: after the stage that ends nearest a
    third and two thirds of the MACs."""
    g = graph(spec)
    macs = np.cumsum([op.macs for op in g.ops])
    ends = [i + 1 for i in range(len(g.ops) - 1) if g.ops[i + 1].stage != g.ops[i].stage]
    cuts = []
    for frac in (1 / 3, 2 / 3):
        best = min(ends, key=lambda e: abs(macs[e - 1] - frac * macs[-1]))
        if best not in cuts:
            cuts.append(best)
    return cuts


QUICK_MAX_MACS = 0.6e9


def design(quick: bool = False) -> list[Probe]:
    """The graphs ``edgeeff profile`` times: 44 specs (20 with ``quick``, none above 0.6 G
    MACs), each whole and cut at two points."""
    n = 20 if quick else 44
    specs = design_specs(n, hi=QUICK_MAX_MACS if quick else MAX_MACS)
    probes = []
    for gi, s in enumerate(specs):
        probes.append(Probe(s, None, gi))
        for c in cut_points(s):
            probes.append(Probe(s, c, gi))
    return probes


REFERENCE = ModelSpec(family="lite", width=1.0, depth=1.0, resolution=128, num_classes=10)


# --------------------------------------------------------------------------- profiling


@dataclass
class Measurement:
    probe: Probe
    ms: float  # drift-corrected latency
    raw_ms: float = 0.0  # as measured
    reference_ms: float = 0.0  # the reference graph, timed right after


@dataclass
class ProfileResult:
    model: latency.LatencyModel
    measurements: list[Measurement]
    int8_macs_per_s: float
    threads: int | None
    wall_s: float = 0.0
    cv_errors: np.ndarray | None = None  # out-of-fold relative error of each measurement

    @property
    def reference_ms(self) -> float:
        """The drift reference graph's median time during the run (0 without one)."""
        refs = [m.reference_ms for m in self.measurements if m.reference_ms > 0]
        return float(np.median(refs)) if refs else 0.0


class Drift:
    """A small reference graph timed after every probe: each probe's latency is scaled by
    (median reference time / reference time now), which cancels slow changes in the machine's
    speed (clock, thermal throttling, other work) over the run. Constant on a steady device."""

    def __init__(self, threads: int | None):
        from edgeeff.device import synth

        self.timer = Timer(synth.build(REFERENCE, metadata=False), threads)
        self.times: list[float] = []

    def now(self, runs: int = 5) -> float:
        t = float(np.median(self.timer.run(runs)))
        self.times.append(t)
        return t

    def close(self) -> None:
        self.timer.close()


def measure(probes: list[Probe], threads: int | None, budget_s: float, log=None,
            drift: bool = True, runs: int = 40, deadline_s: float | None = None,
            reference_ms: float | None = None) -> list[Measurement]:
    """Time every probe (synthesised on the fly, one interpreter at a time) within about
    ``budget_s`` seconds of timing; probes left when ``deadline_s`` has passed are skipped.

    Drift correction scales every probe to the reference graph's median time over this run,
    or to ``reference_ms`` (e.g. a profile's own level, to compare measurements taken at
    another time with its predictions)."""
    from edgeeff.device import synth

    start = time.perf_counter()
    ref = Drift(threads) if drift else None
    out = []
    per = budget_s / max(len(probes), 1)
    try:
        for k, p in enumerate(probes):
            if deadline_s is not None and time.perf_counter() - start > deadline_s:
                if log:
                    log(k, len(probes), None, 0.0)
                break
            t0 = time.perf_counter()
            model = synth.build(p.spec, n_ops=p.n_ops, metadata=False)
            left = per - (time.perf_counter() - t0)
            ms = time_model(model, threads, runs=runs, warmup=1, budget_s=max(left, 0.0))
            del model
            r = ref.now(3) if ref else 1.0
            out.append(Measurement(p, ms, ms, r))
            if log:
                log(k + 1, len(probes), p, ms)
        if ref and ref.times:
            med = reference_ms or float(np.median(ref.times))
            for m in out:
                m.ms = m.raw_ms * med / m.reference_ms
    finally:
        if ref:
            ref.close()
    return out


def fit_measurements(ms: list[Measurement], threads: int | None, folds: int = 5,
                     ridge: float = 1e-3) -> ProfileResult:
    """The latency model of the measurements, with its cross-validated error."""
    name, ver = runtime_info()
    rows = np.array([latency.row(m.probe.graph()) for m in ms])
    y = np.array([m.ms for m in ms])
    groups = np.array([m.probe.group for m in ms])
    whole = np.array([m.probe.n_ops is None for m in ms])
    err = latency.cross_validate(rows, y, groups, folds=folds, ridge=ridge)
    cv = latency.summarize(err[whole])
    cv.update(method=f"{folds}-fold cross-validation over the design's specs, whole graphs",
              design_graphs=int(len(ms)),
              statistic="median of invokes, wall time net of run-queue waits, drift-corrected")
    refs = [m.reference_ms for m in ms if m.reference_ms > 0]
    if refs:
        cv["reference_ms"] = round(float(np.median(refs)), 4)
        cv["reference_spread"] = round(float(np.percentile(refs, 90) / np.percentile(refs, 10))
                                       - 1.0, 4)
        cv["reference_graph"] = REFERENCE.name
    model = latency.from_solution(latency.solve(rows, y, ridge), threads=threads, runtime=name,
                                  runtime_version=ver, cpu=cpu_model(), validation=cv)
    macs = np.array([sum(op.macs for op in m.probe.graph().ops) for m in ms])
    rate = float(np.median(macs[whole] / (y[whole] / 1000.0)))
    return ProfileResult(model, ms, rate, threads, cv_errors=err)


BUDGET_S = {"quick": 12.0, "full": 110.0}  # timing budget (synthesis comes on top)
DEADLINE_S = {"quick": 25.0, "full": 170.0}  # no new probe after this


def profile(threads: int | None = 2, quick: bool = False, budget_s: float | None = None,
            log=None) -> ProfileResult:
    """Time the design on this device and fit the per-op latency model."""
    t0 = time.perf_counter()
    probes = design(quick)
    mode = "quick" if quick else "full"
    budget = budget_s if budget_s is not None else BUDGET_S[mode]
    ms = measure(probes, threads, budget, log, deadline_s=DEADLINE_S[mode])
    res = fit_measurements(ms, threads)
    res.wall_s = time.perf_counter() - t0
    return res


def noise_warning(res: ProfileResult) -> str | None:
    """A hint when the measurements look disturbed: the reference graph's time varied by more
    than 20 % (90th over 10th percentile) during the run, or cross-validation is poor."""
    v = res.model.validation
    spread, cv = v.get("reference_spread", 0.0), v.get("within_10pct", 1.0)
    if spread <= 0.20 and cv >= 0.5:
        return None
    load = ""
    if hasattr(os, "getloadavg"):
        load = f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    return (f"the timings look disturbed (a fixed reference graph varied by {spread:.0%} "
            f"during the run, {cv:.0%} of the design predicted within +-10 % in "
            f"cross-validation{load}). Profile again with the device otherwise idle, or with "
            "fewer --threads than it has cores.")


# --------------------------------------------------------------------------- the device profile


def _meminfo() -> dict[str, int]:
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


def _board_name() -> str:
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(p, "rb") as f:
                name = f.read().rstrip(b"\0").decode(errors="replace").strip()
            if name:
                return name
        except OSError:
            continue
    return f"{platform.node() or 'this machine'} ({cpu_model().split(',')[0]})"


def _mib(n: int) -> str:
    return f"{max(1, n // (1024 * 1024))}MB"


def device_profile(res: ProfileResult, name: str | None = None, folder: str = ".") -> dict:
    """A complete device profile (the ``targets/*.toml`` schema plus ``[latency]``)."""
    import datetime
    import shutil

    today = datetime.date.today().isoformat()
    mem = _meminfo()
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
        "name": name or _board_name(),
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
                        f"cross-validated {cv.get('within_10pct', 0):.0%} within +-10 %"),
        },
        "latency": res.model.to_toml_dict(),
    }


def write_profile(path: str, res: ProfileResult, name: str | None = None) -> str:
    """Write the profile as TOML (atomically); returns the text. It parses back with
    :func:`edgeeff.core.targets.parse_profile` (checked before writing)."""
    from pathlib import Path

    from edgeeff.core import targets
    from edgeeff.core.fsutil import write_text_atomic

    folder = str(Path(path).resolve().parent)
    d = device_profile(res, name, folder)
    head = ("# Device profile written by 'edgeeff profile' (use: edgeeff fit --device "
            f"{path}).\n# RAM and flash are budgets: edit them to taste.\n")
    text = head + targets.dumps(d)
    targets.parse_profile(text, Path(path).stem, path)
    write_text_atomic(path, text)
    return text

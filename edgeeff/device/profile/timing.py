"""Timing int8 graphs with the local TFLite runtime: one invoke's latency, net of the time the
machine's other work kept the interpreter's threads off the CPU, never below what the wall
clock saw at best."""

from __future__ import annotations

import os
import time

import numpy as np

from edgeeff.core.arch import ModelSpec
from edgeeff.core.graph import graph
from edgeeff.device import synth
from edgeeff.device.profile.host import cap_threads
from edgeeff.device.runtime import load_interpreter


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


def net_ms(wall_s: float, wait_before: list[int], wait_after: list[int]) -> float:
    """One invoke's latency, ms: its wall time minus the longest run-queue wait (ns) any thread
    had during it (threads that came or went are left out), not below zero."""
    wait = max((y - x for x, y in zip(wait_before, wait_after) if x >= 0 and y >= 0), default=0)
    return max(wall_s - wait / 1e9, 0.0) * 1000.0


def settle(wall_ms, net_ms_) -> float:
    """The latency to report from a set of invokes: the median of their net times, but never
    less than the fastest wall-clock invoke. A net time below every wall time the machine
    actually delivered is the correction overshooting (it subtracted waits that running the
    graph itself caused), not a latency anyone will see."""
    wall = np.asarray(wall_ms, dtype=float)
    net = np.asarray(net_ms_, dtype=float)
    if net.size == 0:
        return float(np.median(wall)) if wall.size else 0.0
    med = float(np.median(net))
    return max(med, float(wall.min())) if wall.size else med


class Timer:
    """One interpreter, input filled, ready to be invoked and timed."""

    def __init__(self, model: bytes, threads: int | None, warmup: int = 2):
        self.it, self.runtime, _ = load_interpreter(model, threads)
        d = self.it.get_input_details()[0]
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, d["shape"], dtype=np.uint8)  # int8 input: the same bits
        self.it.set_tensor(d["index"], pixels.view(d["dtype"]) if np.dtype(d["dtype"]).itemsize
                           == 1 else pixels.astype(d["dtype"]))
        for _ in range(max(warmup, 1)):  # the first invoke also starts the worker threads
            self.it.invoke()
        self.sched = _SchedStat()

    def sample(self, runs: int) -> tuple[np.ndarray, np.ndarray]:
        """``runs`` invokes: (wall times, net times), ms."""
        wall, net = np.empty(runs), np.empty(runs)
        invoke, read = self.it.invoke, self.sched.read
        for i in range(runs):
            a = read()
            t = time.perf_counter()
            invoke()
            w = time.perf_counter() - t
            net[i] = net_ms(w, a, read())
            wall[i] = w * 1000.0
        return wall, net

    def run(self, runs: int, net: bool = True) -> np.ndarray:
        """``runs`` invokes, ms: wall time minus the longest run-queue wait of a thread
        (``net``), or plain wall time."""
        wall, n = self.sample(runs)
        return n if net else wall

    def close(self) -> None:
        self.sched.close()


def time_model(model: bytes, threads: int | None = 2, runs: int = 15, warmup: int = 2,
               budget_s: float | None = None) -> float:
    """Latency of one invoke, ms: :func:`settle` over ``runs`` invokes (the median net of
    run-queue waits, see :class:`_SchedStat`, never below the fastest wall time). ``budget_s``
    caps the time spent after the first three invokes (fewer runs, at least five, on a slow
    device)."""
    t = Timer(model, threads, warmup)
    try:
        w1, n1 = t.sample(3)
        if budget_s is not None:
            runs = max(5, min(runs, int(budget_s / max(float(np.median(n1)) / 1000.0, 1e-6))))
        w2, n2 = t.sample(max(runs - 3, 0))
    finally:
        t.close()
    return settle(np.concatenate([w1, w2]), np.concatenate([n1, n2]))


def time_interleaved(models: list[bytes], threads: int | None = 2, rounds: int = 15,
                     runs: int = 3, warmup: int = 2, net: bool = True) -> list[float]:
    """Like :func:`time_model` for several models, their rounds interleaved (A B C A B C ...),
    so that a busy spell on the machine hits all of them alike: for A/B comparisons."""
    timers = [Timer(m, threads, warmup) for m in models]
    walls: list[list[np.ndarray]] = [[] for _ in timers]
    nets: list[list[np.ndarray]] = [[] for _ in timers]
    try:
        for _ in range(rounds):
            for t, w, n in zip(timers, walls, nets):
                a, b = t.sample(runs)
                w.append(a)
                n.append(b)
    finally:
        for t in timers:
            t.close()
    if not net:
        return [float(np.median(np.concatenate(w))) for w in walls]
    return [settle(np.concatenate(w), np.concatenate(n)) for w, n in zip(walls, nets)]


def time_spec(spec: ModelSpec, threads: int | None = 2, **kw) -> float:
    """Measured int8 latency of ``spec`` on this machine's runtime, ms (synthetic weights; for
    ``fit --measure``)."""
    return time_model(synth.build(spec, metadata=False), threads, **kw)


class SpecTimer:
    """``fit --measure``'s timer: :func:`time_spec`, once per distinct graph. Neighbouring phi
    often round to the same network; timing it again would only show the machine's noise as
    two different latencies for one model.

    The thread count asked for is capped at the cores this process may use
    (:func:`~edgeeff.device.profile.host.cap_threads`); ``note`` says so when it was."""

    def __init__(self, threads: int | None = 2, **kw):
        self.requested = threads
        self.threads, self.note = cap_threads(threads)
        self.kw = kw
        self.cache: dict[tuple, float] = {}

    @staticmethod
    def key(spec: ModelSpec) -> tuple:
        g = graph(spec)
        return tuple((op.kind, g.shape(op.output), op.weights) for op in g.ops)

    def __call__(self, spec: ModelSpec) -> float:
        k = self.key(spec)
        if k not in self.cache:
            self.cache[k] = time_spec(spec, self.threads, **self.kw)
        return self.cache[k]

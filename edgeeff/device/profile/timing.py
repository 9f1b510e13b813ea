"""Timing int8 graphs with the local TFLite runtime, as ``edgeeff bench`` does: each invoke is
the per-frame call a user's application makes (input copied in, invoke, a classifier's scores
read out), timed on the wall clock; a graph's latency is the median (p50) of its invokes.

What the machine's other work cost is measured, not subtracted: the share of the invokes' wall
time that the interpreter's threads spent runnable but waiting for a CPU
(``/proc/self/task/*/schedstat``, Linux) is reported beside the figure, so a profile taken on a
busy machine says so. (Subtracting it made every prediction a best case the user never sees.)"""

from __future__ import annotations

import os
import time

import numpy as np

from edgeeff.core.arch import ModelSpec
from edgeeff.core.graph import graph
from edgeeff.core.latency import Timing
from edgeeff.device import synth
from edgeeff.device.profile.host import cap_threads
from edgeeff.device.runtime import load_interpreter


class _SchedStat:
    """Run-queue delay of this process's threads (``/proc/self/task/*/schedstat``, Linux):
    how long they were runnable but waiting for a CPU. Where the file is missing (another OS,
    a kernel without schedstats) nothing is read and the share reported is 0."""

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


def wait_ms(wait_before: list[int], wait_after: list[int]) -> float:
    """The longest run-queue wait (ms) any thread had between two reads (threads that came or
    went are left out)."""
    return max((y - x for x, y in zip(wait_before, wait_after) if x >= 0 and y >= 0),
               default=0) / 1e6


class Timer:
    """One interpreter, its input filled as ``edgeeff bench`` fills it (seeded random pixels),
    ready to be invoked and timed.

    :meth:`step` is one frame as :meth:`edgeeff.device.runtime.Classifier.invoke` runs it:
    ``set_tensor`` of the input, ``invoke``, and for a classifier (a ``[1, N]`` output)
    ``get_tensor`` of the scores, dequantised. A prefix graph (``edgeeff profile`` cuts graphs
    to separate the op types) has no scores to read, so its frame ends at the invoke."""

    def __init__(self, model: bytes, threads: int | None, warmup: int = 3):
        self.it, self.runtime, _ = load_interpreter(model, threads)
        d = self.it.get_input_details()[0]
        o = self.it.get_output_details()[0]
        shape = [int(x) for x in d["shape"]]
        rng = np.random.default_rng(0)  # bench's input: the same seed, shape and dtype
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        if np.dtype(d["dtype"]) == np.int8:  # an int8 model's input: the same pixels, shifted
            pixels = (pixels.astype(np.int16) - 128).astype(np.int8)
        self.input = pixels if np.dtype(d["dtype"]).itemsize == 1 else pixels.astype(d["dtype"])
        self.in_index, self.out_index = d["index"], o["index"]
        self.scores = len(o["shape"]) == 2
        scale, zp = o["quantization"]
        self.out_scale, self.out_zp = float(scale), int(zp)
        for _ in range(max(warmup, 1)):  # the first invoke also packs weights, starts threads
            self.step()
        self.sched = _SchedStat()

    def step(self) -> None:
        """One frame, as the user's application (and ``edgeeff bench``) runs it."""
        it = self.it
        it.set_tensor(self.in_index, self.input)
        it.invoke()
        if self.scores:
            out = it.get_tensor(self.out_index)[0]
            if out.dtype in (np.uint8, np.int8):
                (out.astype(np.float32) - self.out_zp) * self.out_scale

    def sample(self, runs: int) -> tuple[np.ndarray, np.ndarray]:
        """``runs`` frames: (wall times, the longest thread's run-queue wait during each), ms."""
        wall, wait = np.empty(runs), np.empty(runs)
        step, read = self.step, self.sched.read
        for i in range(runs):
            a = read()
            t = time.perf_counter()
            step()
            w = time.perf_counter() - t
            wait[i] = wait_ms(a, read())
            wall[i] = w * 1000.0
        return wall, wait

    def run(self, runs: int) -> np.ndarray:
        """``runs`` frames' wall times, ms."""
        return self.sample(runs)[0]

    def close(self) -> None:
        self.sched.close()


def time_model_stats(model: bytes, threads: int | None = 2, runs: int = 15, warmup: int = 3,
                     budget_s: float | None = None, min_runs: int = 5) -> Timing:
    """:class:`~edgeeff.core.latency.Timing` of ``runs`` frames (wall clock, p50 and spread,
    run-queue share). ``budget_s`` caps the time spent after the first three frames (fewer
    runs, at least ``min_runs``, on a slow device)."""
    t0 = time.perf_counter()
    t = Timer(model, threads, warmup)
    try:
        w1, q1 = t.sample(min(3, runs))
        if budget_s is not None:
            one = max(float(np.median(w1)) / 1000.0, 1e-6)
            runs = max(min_runs, min(runs, 3 + int(budget_s / one)))
        w2, q2 = t.sample(max(runs - len(w1), 0))
    finally:
        t.close()
    return Timing.of(np.concatenate([w1, w2]), time.perf_counter() - t0,
                     np.concatenate([q1, q2]))


def time_model(model: bytes, threads: int | None = 2, runs: int = 15, warmup: int = 3,
               budget_s: float | None = None) -> float:
    """Latency of one frame, ms: the wall-clock p50 of ``runs`` frames (``edgeeff bench``'s
    statistic, see :func:`time_model_stats`)."""
    return time_model_stats(model, threads, runs, warmup, budget_s).p50_ms


def time_interleaved(models: list[bytes], threads: int | None = 2, rounds: int = 15,
                     runs: int = 3, warmup: int = 3) -> list[float]:
    """Wall-clock p50 of several models, their rounds interleaved (A B C A B C ...), so that a
    busy spell on the machine hits all of them alike: for A/B comparisons."""
    timers = [Timer(m, threads, warmup) for m in models]
    walls: list[list[np.ndarray]] = [[] for _ in timers]
    try:
        for _ in range(rounds):
            for t, w in zip(timers, walls):
                w.append(t.run(runs))
    finally:
        for t in timers:
            t.close()
    return [float(np.median(np.concatenate(w))) for w in walls]


def time_spec(spec: ModelSpec, threads: int | None = 2, **kw) -> float:
    """Measured int8 latency of ``spec`` on this machine's runtime, ms (synthetic weights)."""
    return time_model(synth.build(spec, metadata=False), threads, **kw)


class SpecTimer:
    """``fit --measure``'s timer: the spec's synthesized int8 graph timed as
    :func:`time_model_stats` does, once per distinct graph. Neighbouring phi often round to the
    same network; timing it again would only show the machine's noise as two different
    latencies for one model.

    Called with a spec it returns the p50 in ms (:data:`edgeeff.core.budget.Measure`);
    :meth:`timing` returns the whole :class:`~edgeeff.core.latency.Timing` and accepts a time
    budget for the one graph. ``timed`` lists the timings in the order they were taken.

    The thread count asked for is capped at the cores this process may use
    (:func:`~edgeeff.device.profile.host.cap_threads`); ``note`` says so when it was."""

    def __init__(self, threads: int | None = 2, runs: int = 15, **kw):
        self.requested = threads
        self.threads, self.note = cap_threads(threads)
        self.runs = runs
        self.kw = kw
        self.cache: dict[tuple, Timing] = {}
        self.timed: list[Timing] = []

    @staticmethod
    def key(spec: ModelSpec) -> tuple:
        g = graph(spec)
        return tuple((op.kind, g.shape(op.output), op.weights) for op in g.ops)

    def cached(self, spec: ModelSpec) -> Timing | None:
        return self.cache.get(self.key(spec))

    def timing(self, spec: ModelSpec, budget_s: float | None = None) -> Timing:
        k = self.key(spec)
        if k not in self.cache:
            model = synth.build(spec, metadata=False)
            t = time_model_stats(model, self.threads, self.runs, budget_s=budget_s, **self.kw)
            self.cache[k] = t
            self.timed.append(t)
        return self.cache[k]

    def __call__(self, spec: ModelSpec) -> float:
        return self.timing(spec).p50_ms

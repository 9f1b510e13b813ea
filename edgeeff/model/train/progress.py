"""Progress of a training run by phase, for the CLI's bars with ETAs."""

from __future__ import annotations


class Phases:
    """Progress of a training run by phase (``load``, ``features``, ``views``, ``train``), each
    with its number of units; ``report(phase, n)`` is called as units finish. The CLI draws bars
    with ETAs from it; the default does nothing."""

    def plan(self, phases: dict[str, tuple[str, int]]) -> None:  # noqa: B027 - optional hook
        pass

    def report(self, phase: str, n: int = 1) -> None:  # noqa: B027 - optional hook
        pass

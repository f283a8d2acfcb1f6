"""Observers of repeated runs: told about each run between runs, never inside one.

Progress lines (:mod:`localbench.measure.progress`) and energy counters
(:mod:`localbench.measure.energy`) are observers, so nothing they do can fall inside a timed region.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the run record, without importing the timing method here
    from localbench.engine.generation import Run


class RunObserver:
    """Told about the runs of :func:`repeat` between them, never inside one: progress
    lines and energy counters live here, outside every timed region."""

    def runs_started(self, warmup_runs: int, repetitions: int) -> None:
        """Before the first warm-up run."""

    def measured_started(self) -> None:
        """After the warm-up runs, right before the first measured run."""

    def run_finished(self, run: Run, index: int, measured: bool) -> None:
        """After run ``index`` (0-based, within the warm-up or the measured runs)."""

    def measured_finished(self) -> None:
        """Right after the last measured run."""


class Observers(RunObserver):
    """Several observers as one, told in order."""

    def __init__(self, *observers: RunObserver | None) -> None:
        self.observers = [o for o in observers if o is not None]

    def runs_started(self, warmup_runs: int, repetitions: int) -> None:
        for observer in self.observers:
            observer.runs_started(warmup_runs, repetitions)

    def measured_started(self) -> None:
        for observer in self.observers:
            observer.measured_started()

    def run_finished(self, run: Run, index: int, measured: bool) -> None:
        for observer in self.observers:
            observer.run_finished(run, index, measured)

    def measured_finished(self) -> None:
        for observer in self.observers:
            observer.measured_finished()

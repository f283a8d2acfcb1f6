"""The one timing method every scenario uses.

Warm-up runs first (not counted), then measured runs. The device is synchronised before
every clock read. Per-token times come from a stopping criterion that ``generate`` calls
once per new token: it synchronises and reads the clock, and never stops generation.
Eager ``generate`` already waits for the device at every step (to check for end of
sequence), so this adds no new stall to the loop it measures.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from localbench.engine.device import synchronize
from localbench.engine.generation import Run
from localbench.measure.observers import RunObserver


class TokenClock(StoppingCriteria):
    """Records a synchronised timestamp each time a token is generated."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        synchronize(self.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def timed_generate(device: torch.device, generate: Callable[[StoppingCriteriaList], object]) -> Run:
    """Run ``generate(stopping_criteria)`` once and time it, including per-token stamps."""
    clock = TokenClock(device)
    synchronize(device)
    start = time.perf_counter()
    output = generate(StoppingCriteriaList([clock]))
    synchronize(device)
    end = time.perf_counter()
    return Run.from_stamps(start, clock.times, end, output=output)


def repeat(
    run_once: Callable[[], Run],
    warmup_runs: int,
    repetitions: int,
    observer: RunObserver | None = None,
) -> list[Run]:
    """``warmup_runs`` uncounted calls, then ``repetitions`` measured ones; ``observer``
    hears of each between runs."""
    observer = observer or RunObserver()
    observer.runs_started(warmup_runs, repetitions)
    for index in range(warmup_runs):
        observer.run_finished(run_once(), index, measured=False)
    observer.measured_started()
    runs = []
    for index in range(repetitions):
        runs.append(run_once())
        observer.run_finished(runs[-1], index, measured=True)
    observer.measured_finished()
    return runs

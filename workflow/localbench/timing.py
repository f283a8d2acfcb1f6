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
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from localbench.device import synchronize
from localbench.observers import RunObserver


class TokenClock(StoppingCriteria):
    """Records a synchronised timestamp each time a token is generated."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        synchronize(self.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@dataclass
class Run:
    """One generation request on one clock: start, first and last token, end."""

    start: float
    first_token: float
    last_token: float
    end: float
    tokens: int
    inter_token_s: list[float]
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_stamps(cls, start: float, stamps: list[float], end: float, **extra) -> Run:
        """A run from per-token timestamps (one per generated token)."""
        if not stamps:
            raise ValueError("a generation run produced no tokens")
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        return cls(start, stamps[0], stamps[-1], end, len(stamps), gaps, extra)

    @property
    def latency_s(self) -> float:
        return self.end - self.start

    @property
    def first_token_s(self) -> float:
        return self.first_token - self.start

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first, over the time from first to last token."""
        if self.tokens < 2:
            raise ValueError("decode rate needs at least two generated tokens")
        return (self.tokens - 1) / (self.last_token - self.first_token)


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


# Pure greedy decoding in every generate() call of the project: one token per step, the
# most likely one. The model's generation config may ask for sampling, top-k/top-p or a
# repetition penalty (Qwen2.5's: 1.1); all are switched off, so that eager generate()
# and the fast decoders compute the same tokens.
GREEDY = {
    "do_sample": False,
    "num_beams": 1,
    "temperature": None,
    "top_p": None,
    "top_k": None,
    "repetition_penalty": 1.0,
}


def greedy_fixed_length(new_tokens: int) -> dict:
    """generate() arguments for greedy decoding of exactly ``new_tokens`` tokens."""
    return {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, **GREEDY}

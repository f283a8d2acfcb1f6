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
    """One generate call: its start, per-token stamps and end, all on one clock."""

    start: float
    token_times: list[float]
    end: float
    extra: dict = field(default_factory=dict)

    @property
    def latency_s(self) -> float:
        return self.end - self.start

    @property
    def first_token_s(self) -> float:
        return self.token_times[0] - self.start

    @property
    def tokens(self) -> int:
        return len(self.token_times)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first, over the time from first to last token."""
        if self.tokens < 2:
            raise ValueError("decode rate needs at least two generated tokens")
        return (self.tokens - 1) / (self.token_times[-1] - self.token_times[0])

    @property
    def inter_token_s(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:], strict=False)]


def timed_generate(device: torch.device, generate: Callable[[StoppingCriteriaList], object]) -> Run:
    """Run ``generate(stopping_criteria)`` once and time it, including per-token stamps."""
    clock = TokenClock(device)
    synchronize(device)
    start = time.perf_counter()
    output = generate(StoppingCriteriaList([clock]))
    synchronize(device)
    end = time.perf_counter()
    return Run(start=start, token_times=clock.times, end=end, extra={"output": output})


def repeat(run_once: Callable[[], Run], warmup_runs: int, repetitions: int) -> list[Run]:
    """``warmup_runs`` uncounted calls, then ``repetitions`` measured ones."""
    for _ in range(warmup_runs):
        run_once()
    return [run_once() for _ in range(repetitions)]


def greedy_fixed_length(new_tokens: int) -> dict:
    """generate() arguments for greedy decoding of exactly ``new_tokens`` tokens."""
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }

"""What the inference engine takes and gives: requests, outputs with their own timings,
streamed token events, and the runner each task implements.

Kept apart from :mod:`localbench.engine.inference`, which imports every runner, so that a
runner module never imports the module that imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localbench.engine.generation import Run
from localbench.engine.loading import LoadedModel


@dataclass
class Request:
    """One input of the model's task. Text models read ``text`` (or ``prompt_ids``,
    a prompt already in token ids); captioning reads ``image``; visual question
    answering and DeepSeek-VL2 read ``image`` and ``text`` (the question); speech
    recognition reads ``audio`` (mono float samples at the runner's sampling rate)."""

    text: str | None = None
    prompt_ids: list[int] | None = None
    image: Any = None
    audio: Any = None
    # This request's budget of new tokens; None: the one run() is given.
    max_new_tokens: int | None = None
    # Text models: wrap ``text`` in the tokenizer's chat template where it has one.
    chat: bool = True


@dataclass
class Output:
    """What one request produced, on the host clock (seconds, ``time.perf_counter``):
    ``start`` when its batch began (after a device sync), ``first_token`` when its first
    token was on the host, ``end`` when its last was."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    start: float
    first_token: float
    end: float
    # Gaps between this request's tokens where each was read as it was made (streaming,
    # eager, or batch 1 on the fast backend); empty otherwise.
    inter_token_s: list[float] = field(default_factory=list)
    # Task details: audio windows, image size, the batch the request ran in, ...
    details: dict = field(default_factory=dict)
    # When its last token was on the host, where that is known apart from ``end`` (eager
    # generate() stamps each step; ``end`` also holds its return); None: ``end``.
    last_token: float | None = None

    @property
    def latency_s(self) -> float:
        return self.end - self.start

    @property
    def first_token_s(self) -> float:
        return self.first_token - self.start

    def to_run(self, start: float | None = None) -> Run:
        """The timing record of this request; ``start`` when it began earlier (the
        preprocessing before the batch)."""
        return Run(
            start=self.start if start is None else start,
            first_token=self.first_token,
            last_token=self.end if self.last_token is None else self.last_token,
            end=self.end,
            tokens=len(self.token_ids),
            inter_token_s=list(self.inter_token_s),
            extra={"tokens": self.token_ids, "output": self},
        )


@dataclass
class TokenEvent:
    """One new token of one request, streamed: its id, the text it adds (may be empty
    while a multi-byte character is incomplete) and when it reached the host."""

    request: int
    token_id: int
    text: str
    time: float


class Runner:
    """What one task does with requests. A subclass sets ``tasks`` and implements
    ``generate``; ``batch_size`` says how many requests it takes at once."""

    tasks: tuple[str, ...] = ()

    def __init__(self, loaded: LoadedModel, backend: str, max_batch: int | None) -> None:
        self.loaded = loaded
        self.backend = backend  # the one used: a runner falls back to eager and says why
        self.note: str | None = None
        self.max_batch = max_batch

    def batch_size(self, requests: list[Request], max_new_tokens: int) -> int:
        """How many of ``requests`` run together (at least one)."""
        return 1

    def generate(
        self,
        requests: list[Request],
        max_new_tokens: int,
        force_new_tokens: bool,
        on_token: Callable[[int, int, float], None] | None,
    ) -> list[Output]:
        """Outputs of ``requests`` (at most ``batch_size``), in order. ``on_token(i,
        token_id, time)`` hears of each new token of request ``i`` as it is made."""
        raise NotImplementedError

    def details(self) -> dict:
        """What a result records about how the requests ran (decoder, graphs, compile)."""
        return {}

    def close(self) -> None:
        """Free what the runner holds beside the model (caches, graphs)."""

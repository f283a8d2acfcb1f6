"""What every generation in the project shares: greedy decoding settings, and the
record of one request on one clock (start, first and last token, end).

The engine's backends return :class:`Run` records; the measuring code times and
repeats them (:mod:`localbench.measure.timing`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field


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


# transformers warns on every generate() call given max_new_tokens (min_new_tokens) for a
# model whose own generation config sets max_length (min_length): "Both `max_new_tokens`
# (=N) and `max_length`(=448) seem to have been set" for every Whisper window, so once per
# file of a pipeline. Ours always pass each request's budget, on purpose, and the budget
# wins, as the message says. No argument avoids it (transformers checks the model's own
# config too), so those two messages are dropped from the one logger that emits them.
LENGTH_CLASH_LOGGER = "transformers.generation.utils"
LENGTH_CLASH_MESSAGES = ("Both `max_new_tokens`", "Both `min_new_tokens`")


class LengthClashFilter(logging.Filter):
    """Drops transformers' notice that a token budget overrides the model's length."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LENGTH_CLASH_MESSAGES)


def quiet_length_clash() -> None:
    """Install :class:`LengthClashFilter` once in this process (a second call does nothing)."""
    logger = logging.getLogger(LENGTH_CLASH_LOGGER)
    if not any(isinstance(known, LengthClashFilter) for known in logger.filters):
        logger.addFilter(LengthClashFilter())

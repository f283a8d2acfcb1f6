"""What the inference engine takes and gives: requests, outputs with their own timings,
streamed token events, and the runner each task implements.

Kept apart from :mod:`localbench.engine.inference`, which imports every runner, so that a
runner module never imports the module that imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localbench.engine.device import available_memory_bytes
from localbench.engine.generation import Run
from localbench.engine.loading import LoadedModel

# The most sequences decoded together, and the share of the free memory their caches may
# take (the rest is left for activations and the allocator).
MAX_DECODE_BATCH = 64
KV_CACHE_SHARE = 0.5


class PromptTooLong(ValueError):
    """A prompt that leaves no room for a new token in the model's context."""


def token_budget(request, prompt_length: int, max_new_tokens: int, limit: int | None) -> int:
    """The request's new-token budget (its own, else ``max_new_tokens``), within the
    model's ``limit`` of positions; PromptTooLong when the prompt leaves no room."""
    wanted = request.max_new_tokens or max_new_tokens
    if limit is None:
        return wanted
    room = limit - prompt_length
    if room < 1:
        raise PromptTooLong(
            f"the prompt is {prompt_length} tokens; the model takes at most {limit} in all"
        )
    return min(wanted, room)


def tokens_until_end(row: list[int], budget: int, ends: set[int]) -> list[int]:
    """A sequence's new tokens: up to its budget, before its first end of sequence."""
    tokens = []
    for token in row[:budget]:
        if token in ends:
            break
        tokens.append(token)
    return tokens


def gaps(times: list[float]) -> list[float]:
    """The gaps between consecutive timestamps."""
    return [b - a for a, b in zip(times, times[1:], strict=False)]


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

    def __init__(
        self,
        loaded: LoadedModel,
        backend: str,
        max_batch: int | None,
        compile_steps: bool | None = None,
    ) -> None:
        self.loaded = loaded
        self.backend = backend  # the one used: a runner falls back to eager and says why
        self.note: str | None = None
        self.max_batch = max_batch
        # Whether a fast decoder compiles its steps with torch.compile before capturing
        # them as CUDA graphs; None: where it captures graphs (the decoder's default).
        self.compile_steps = compile_steps
        self.batch_rule: str | None = None  # why the last batch size is what it is
        self.decoder = None  # the fast decoder, once made (``fast_decoder``)

    def batch_size(self, requests: list[Request], max_new_tokens: int) -> int:
        """How many of ``requests`` run together (at least one)."""
        return 1

    def memory_batch(self, wanted: int, per_sequence: int, units: str, cache: str) -> int:
        """How many of ``wanted`` sequences run together: up to ``max_batch`` when set,
        else up to what their caches (``per_sequence`` bytes each) may take of the memory
        free now (``KV_CACHE_SHARE``) and ``MAX_DECODE_BATCH``; ``batch_rule`` says why."""
        if self.max_batch:
            self.batch_rule = f"max_batch {self.max_batch}"
            return min(wanted, self.max_batch)
        free, _ = available_memory_bytes(self.loaded.device)
        fits = max(1, int(free * KV_CACHE_SHARE // per_sequence))
        size = min(wanted, fits, MAX_DECODE_BATCH)
        self.batch_rule = (
            f"{size} of {wanted} {units}: {per_sequence / 2**20:.1f} MiB of {cache} each, "
            f"{free / 2**30:.1f} GiB free, at most {MAX_DECODE_BATCH}"
        )
        return size

    def fast_decoder(self, decoder_class, rows: int, max_len: int):
        """The fast decoder for ``rows`` sequences of ``max_len`` positions, made again
        (compiled as ``compile_steps`` says) only when the one held is too small: a
        smaller batch runs in a larger decoder, its spare rows repeating the first, with
        no second compile and capture."""
        decoder = self.decoder
        if decoder is None or decoder.batch < rows or decoder.max_len < max_len:
            self.close()
            self.decoder = decoder_class(
                self.loaded.model,
                max_len=max_len,
                batch=rows,
                use_compile=self.compile_steps,
            )
        return self.decoder

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
        self.decoder = None

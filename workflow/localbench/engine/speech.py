"""Speech recognition requests: audio in, Whisper's greedy transcript out, many at once.

A request's audio is cut into the model's 30 s windows (the feature extractor's
``n_samples``); each window is one unit of work, and the windows of all requests go
through feature extraction, the encoder and the decoder together, as many at once as the
memory allows. A request's text is its windows' texts joined with a space.

Fast backend: :class:`~localbench.engine.backends.whisper.WhisperFastDecoder` holding the
cross-attention keys and values of B windows and a static self-attention cache. Eager
backend: the generic ``GenerationMixin.generate`` on the batch of windows. Whisper's own
generate() adds timestamp-driven segment seeking, which turns a forced token count into a
variable one and is not needed on one window at a time; the prompt fixes language and
task, so no language detection pass runs either.

A request's ``start`` is stamped after a device sync, before its batch's feature
extraction: its latency covers feature extraction, the encoder and the decoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationMixin, StoppingCriteriaList

from localbench.engine.backends.fast import end_of_sequence_ids
from localbench.engine.backends.whisper import WhisperFastDecoder, supports
from localbench.engine.device import synchronize
from localbench.engine.generation import GREEDY, greedy_fixed_length
from localbench.engine.requests import Output, Request, Runner, token_budget
from localbench.engine.text import StepClock

SAMPLING_RATE = 16_000
# The shortest audio transcribed, in hops of the feature extractor. Whisper's extractor
# makes one log-mel frame of 25 ms (n_fft 400) every 10 ms (hop_length 160 at 16 kHz),
# and its encoder keeps one position per two frames; 10 frames, 0.1 s, is about the
# shortest spoken word. Anything shorter holds no word, and Whisper, which pads every
# input to 30 s, would "transcribe" the padding into invented text.
MIN_AUDIO_FRAMES = 10


class AudioTooShort(ValueError):
    """Audio too short to hold a word; the message says how long it is and what is needed."""


def decoder_prompt(generation_config) -> list[int]:
    """``<|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>`` as token ids."""
    prompt = [generation_config.decoder_start_token_id]
    if getattr(generation_config, "is_multilingual", False):
        prompt += [
            generation_config.lang_to_id["<|en|>"],
            generation_config.task_to_id["transcribe"],
        ]
    prompt.append(generation_config.no_timestamps_token_id)
    return prompt


def audio_windows(audio, feature_extractor) -> list[np.ndarray]:
    """``audio`` (mono samples at ``SAMPLING_RATE``) as consecutive windows of the model's
    ``n_samples``, the last one shorter: long audio is split, never cut off. Raises
    AudioTooShort below ``MIN_AUDIO_FRAMES`` frames (or one FFT window)."""
    if audio is None:
        raise ValueError("a speech-recognition request needs audio")
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"audio must be 1-D mono samples, got shape {samples.shape}")
    hop = feature_extractor.hop_length
    needed = max(feature_extractor.n_fft, MIN_AUDIO_FRAMES * hop)
    if len(samples) < needed:
        raise AudioTooShort(
            f"audio is {len(samples) / SAMPLING_RATE:.3f} s long ({len(samples)} samples at "
            f"{SAMPLING_RATE} Hz); at least {needed / SAMPLING_RATE:.2f} s is needed: "
            f"{MIN_AUDIO_FRAMES} frames of {hop} samples, about one spoken word"
        )
    size = feature_extractor.n_samples
    return [samples[start : start + size] for start in range(0, len(samples), size)]


def cache_bytes_per_window(config, dtype: torch.dtype, max_len: int) -> int:
    """Bytes of decoder cache one window takes: self-attention keys and values for
    ``max_len`` positions and cross-attention keys and values for the encoder's frames."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    positions = max_len + config.max_source_positions
    return 2 * config.decoder_layers * config.d_model * positions * itemsize


@dataclass
class _Window:
    """One window's tokens and its times on the host clock (seconds)."""

    tokens: list[int]
    start: float
    first_token: float
    last_token: float
    end: float
    # Gaps between its tokens where each was read as it was made; None otherwise.
    gaps: list[float] | None
    batch: int


class _InOrder:
    """Hands each request's new tokens to ``on_token`` in the request's order: windows of
    one request may decode side by side, so a window's tokens wait until the windows
    before it are done. Tokens past a window's own budget are dropped."""

    def __init__(self, on_token: Callable, owners: list[int], budgets: list[int]) -> None:
        self.on_token = on_token
        self.owners = owners  # unit -> request; a request's units are consecutive
        self.budgets = budgets
        self.counts = [0] * len(owners)
        self.current = {}  # request -> the unit whose tokens go out now
        for unit, request in enumerate(owners):
            self.current.setdefault(request, unit)
        self.waiting: dict[int, list[tuple[int, float]]] = {}
        self.done: set[int] = set()

    def token(self, unit: int, token_id: int, when: float) -> None:
        if self.counts[unit] >= self.budgets[unit]:
            return
        self.counts[unit] += 1
        request = self.owners[unit]
        if self.current[request] == unit:
            self.on_token(request, token_id, when)
        else:
            self.waiting.setdefault(unit, []).append((token_id, when))

    def finish(self, unit: int) -> None:
        self.done.add(unit)
        request = self.owners[unit]
        while self.current[request] in self.done:
            following = self.current[request] + 1
            if following == len(self.owners) or self.owners[following] != request:
                return
            self.current[request] = following
            for token_id, when in self.waiting.pop(following, []):
                self.on_token(request, token_id, when)


class SpeechRunner(Runner):
    tasks = ("speech-recognition",)

    def __init__(
        self, loaded, backend: str, max_batch: int | None, compile_steps: bool | None = None
    ) -> None:
        super().__init__(loaded, backend, max_batch, compile_steps)
        if backend == "fast":
            ok, why = supports(loaded.model)
            if not ok:
                self.backend = "eager"
                self.note = f"fast backend not available ({why}); ran eager"
        generation = loaded.model.generation_config
        self.prompt = decoder_prompt(generation)
        self.ends = set(end_of_sequence_ids(generation))
        self.extractor = loaded.processor.feature_extractor

    def batch_size(self, requests: list[Request], max_new_tokens: int) -> int:
        """All of them: their windows, not the requests, are batched (``window_batch``)."""
        return len(requests)

    def budget(self, request: Request, max_new_tokens: int) -> int:
        """New tokens per window of ``request``, within the decoder's positions."""
        limit = getattr(self.loaded.model.config, "max_target_positions", None)
        return token_budget(request, len(self.prompt), max_new_tokens, limit)

    def window_batch(self, windows: int, max_len: int) -> int:
        """How many windows decode together: up to ``max_batch`` when set, else up to what
        their caches may take of the memory free now (``KV_CACHE_SHARE``) and
        ``MAX_DECODE_BATCH``."""
        per_window = cache_bytes_per_window(self.loaded.model.config, self.loaded.dtype, max_len)
        return self.memory_batch(windows, per_window, "windows", "self- and cross-attention cache")

    # -- generation --------------------------------------------------------------

    def generate(self, requests, max_new_tokens, force_new_tokens, on_token) -> list[Output]:
        # Every request is checked before any is decoded.
        pieces = [audio_windows(r.audio, self.extractor) for r in requests]
        budgets = [self.budget(r, max_new_tokens) for r in requests]
        owners = [index for index, windows in enumerate(pieces) for _ in windows]
        units = [piece for windows in pieces for piece in windows]
        unit_budgets = [budgets[index] for index in owners]
        max_len = len(self.prompt) + max(budgets)
        size = self.window_batch(len(units), max_len)
        if self.backend == "fast":
            self._prepare(size, max_len)
        run = self._fast if self.backend == "fast" else self._eager
        order = _InOrder(on_token, owners, unit_budgets) if on_token is not None else None
        windows: list[_Window] = []
        for first in range(0, len(units), size):
            group = range(first, min(first + size, len(units)))
            hook = None
            if order is not None:

                def hook(row: int, token_id: int, when: float, first: int = first) -> None:
                    order.token(first + row, token_id, when)

            own = [unit_budgets[u] for u in group]
            synchronize(self.loaded.device)
            start = time.perf_counter()
            features = self._features([units[u] for u in group])
            windows.extend(run(features, own, force_new_tokens, hook, start))
            if order is not None:
                for unit in group:
                    order.finish(unit)
        outputs, at = [], 0
        for request_pieces in pieces:
            outputs.append(self._output(request_pieces, windows[at : at + len(request_pieces)]))
            at += len(request_pieces)
        return outputs

    def _features(self, pieces: list[np.ndarray]) -> torch.Tensor:
        features = self.extractor(pieces, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        return features.input_features.to(self.loaded.device, self.loaded.dtype)

    def _output(self, pieces: list[np.ndarray], windows: list[_Window]) -> Output:
        """A request's output from its windows, in order."""
        decode = self.loaded.processor.decode
        texts = [decode(w.tokens, skip_special_tokens=True).strip() for w in windows]
        # Gaps between all its tokens where each window's were read as made, one window
        # after another (windows decoded side by side have no order between them).
        gaps: list[float] = []
        spoken = [w for w in windows if w.tokens]
        in_sequence = all(
            b.first_token >= a.last_token for a, b in zip(spoken, spoken[1:], strict=False)
        )
        if in_sequence and all(w.gaps is not None for w in spoken):
            for before, window in zip([None, *spoken], spoken, strict=False):
                if before is not None:
                    gaps.append(window.first_token - before.last_token)
                gaps.extend(window.gaps)
        samples = sum(len(piece) for piece in pieces)
        return Output(
            text=" ".join(text for text in texts if text),
            token_ids=[token for w in windows for token in w.tokens],
            prompt_tokens=len(self.prompt),
            start=windows[0].start,
            first_token=windows[0].first_token,
            end=windows[-1].end,
            last_token=windows[-1].last_token,
            inter_token_s=gaps,
            details={
                "audio_seconds": round(samples / SAMPLING_RATE, 3),
                "windows": len(windows),
                "window_seconds": self.extractor.n_samples / SAMPLING_RATE,
                "batch": windows[0].batch,
                **({"batch_rule": self.batch_rule} if self.batch_rule else {}),
            },
        )

    def _prepare(self, rows: int, max_len: int) -> None:
        """The fast decoder for ``rows`` windows (``fast_decoder``) and its graphs
        captured: outside any request's time."""
        self.fast_decoder(WhisperFastDecoder, rows, max_len).prepare(len(self.prompt))

    def _fast(self, features, budgets, force, on_token, start) -> list[_Window]:
        decoder = self.decoder
        decoder.encode(features)
        budget = max(budgets)
        if decoder.batch == 1 and force and on_token is None:
            # One window of a fixed length: the decoder's timed single-sequence path
            # (per-token gaps from CUDA events, no sync per token).
            prompt = torch.tensor([self.prompt], device=self.loaded.device)
            runs, timed = [decoder.generate(prompt, budget)], True
        else:
            runs = decoder.generate_batch(
                [self.prompt] * len(budgets), budget, stop_at_end=not force, on_token=on_token
            )
            timed = on_token is not None
        windows = []
        for own, run in zip(budgets, runs, strict=True):
            tokens = run.tokens[:own]
            gaps = list(run.inter_token_s[: max(0, len(tokens) - 1)]) if timed else None
            windows.append(
                _Window(tokens, start, run.first_token, run.end, run.end, gaps, len(budgets))
            )
        return windows

    def _eager(self, features, budgets, force, on_token, start) -> list[_Window]:
        loaded = self.loaded
        rows, budget = len(budgets), max(budgets)
        prompt = torch.tensor([self.prompt] * rows, device=loaded.device)
        clock = StepClock(loaded.device, rows, on_token, set() if force else self.ends)
        kwargs = greedy_fixed_length(budget) if force else {"max_new_tokens": budget, **GREEDY}
        output = GenerationMixin.generate(
            loaded.model,
            input_features=features,
            decoder_input_ids=prompt,
            stopping_criteria=StoppingCriteriaList([clock]),
            **kwargs,
        )
        synchronize(loaded.device)
        end = time.perf_counter()
        stamps = clock.times or [end]
        windows = []
        for own, row in zip(budgets, output[:, len(self.prompt) :].tolist(), strict=True):
            tokens = []
            for token in row[:own]:
                if not force and token in self.ends:
                    break
                tokens.append(token)
            times = stamps[: len(tokens)] or stamps[:1]
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            # One window ends when generate() returns; in a batch, each at its last token.
            window_end = end if rows == 1 else times[-1]
            windows.append(_Window(tokens, start, times[0], times[-1], window_end, gaps, rows))
        return windows

    def details(self) -> dict:
        if self.decoder is None:
            return {}
        return self.decoder.details(
            "start: host clock after a device sync, before feature extraction and the "
            "encoder; first token: after a device sync; inter-token gaps: CUDA events "
            "between graph replays (host clock on CPU), no sync per token, for one window "
            "of a fixed length, else the host clock where tokens are read as they are made"
        )

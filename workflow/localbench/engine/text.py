"""Text generation requests: prompts in, greedy continuations out, one or many at once.

Fast backend: the project's decoder (:class:`~localbench.engine.backends.fast.FastDecoder`)
holding a static cache for B sequences; shorter prompts are padded on the left and the
padding hidden from attention, and a finished sequence is ignored while the others go on.
Eager backend: transformers ``generate()`` on the same left-padded batch.
"""

from __future__ import annotations

import time

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from localbench.engine.backends.fast import FastDecoder, end_of_sequence_ids, supports
from localbench.engine.device import synchronize
from localbench.engine.generation import GREEDY, greedy_fixed_length
from localbench.engine.requests import (
    Output,
    Request,
    Runner,
    gaps,
    token_budget,
    tokens_until_end,
)

# Prompt lengths of a batch on CUDA are rounded up to a multiple of this (see _fast).
PREFILL_BUCKET = 64


class StepClock(StoppingCriteria):
    """Called by ``generate()`` after each step: synchronises, stamps the time and, when
    streaming, hands each live row's new token to ``on_token``. Never stops generation."""

    def __init__(self, device, rows: int, on_token=None, ends: set[int] = frozenset()):
        self.device = device
        self.times: list[float] = []
        self.on_token = on_token
        self.ends = ends
        self.live = set(range(rows))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        synchronize(self.device)
        now = time.perf_counter()
        self.times.append(now)
        if self.on_token is not None:
            newest = input_ids[:, -1].tolist()
            for row in sorted(self.live):
                if newest[row] in self.ends:
                    self.live.discard(row)
                else:
                    self.on_token(row, newest[row], now)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes of KV cache one token of one sequence takes."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * heads * head_dim * itemsize


class TextRunner(Runner):
    tasks = ("text-generation",)

    def __init__(
        self, loaded, backend: str, max_batch: int | None, compile_steps: bool | None = None
    ) -> None:
        super().__init__(loaded, backend, max_batch, compile_steps)
        if backend == "fast":
            ok, why = supports(loaded.model)
            if not ok:
                self.backend = "eager"
                self.note = f"fast backend not available ({why}); ran eager"
        tokenizer = loaded.processor
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.ends = set(end_of_sequence_ids(loaded.model.generation_config))
        if tokenizer.eos_token_id is not None:
            self.ends.add(tokenizer.eos_token_id)
        self._prompts: dict[int, list[int]] = {}

    # -- prompts ---------------------------------------------------------------

    def prompt_ids(self, request: Request) -> list[int]:
        """The request's prompt as token ids (through the chat template when the
        tokenizer has one and the request asks for it)."""
        if request.prompt_ids is not None:
            ids = [int(i) for i in request.prompt_ids]
        elif request.text is None:
            raise ValueError("a text-generation request needs text or prompt_ids")
        else:
            tokenizer = self.loaded.processor
            if request.chat and getattr(tokenizer, "chat_template", None):
                encoded = tokenizer.apply_chat_template(
                    [{"role": "user", "content": request.text}],
                    add_generation_prompt=True,
                    return_dict=True,
                )
                ids = list(encoded["input_ids"])
            else:
                ids = tokenizer(request.text)["input_ids"]
        if not ids:
            raise ValueError("the prompt is empty")
        return ids

    def budget(self, request: Request, prompt_length: int, max_new_tokens: int) -> int:
        """The request's new-token budget, within the model's context."""
        limit = getattr(self.loaded.model.config, "max_position_embeddings", None)
        return token_budget(request, prompt_length, max_new_tokens, limit)

    def _ids(self, request: Request) -> list[int]:
        key = id(request)
        if key not in self._prompts:
            self._prompts[key] = self.prompt_ids(request)
        return self._prompts[key]

    # -- batch size ------------------------------------------------------------

    def batch_size(self, requests: list[Request], max_new_tokens: int) -> int:
        """As many as asked, up to ``max_batch`` when set, else up to what the KV cache
        may take of the memory free now (``KV_CACHE_SHARE``) and ``MAX_DECODE_BATCH``."""
        longest = max(len(self._ids(r)) + (r.max_new_tokens or max_new_tokens) for r in requests)
        per_sequence = kv_bytes_per_token(self.loaded.model.config, self.loaded.dtype) * longest
        return self.memory_batch(len(requests), per_sequence, "requests", "KV cache")

    # -- generation --------------------------------------------------------------

    def generate(self, requests, max_new_tokens, force_new_tokens, on_token) -> list[Output]:
        prompts = [self._ids(r) for r in requests]
        budgets = [
            self.budget(r, len(p), max_new_tokens) for r, p in zip(requests, prompts, strict=True)
        ]
        for request in requests:
            self._prompts.pop(id(request), None)
        if self.backend == "fast":
            outputs = self._fast(prompts, budgets, force_new_tokens, on_token)
        else:
            outputs = self._eager(prompts, budgets, force_new_tokens, on_token)
        for output in outputs:
            output.details["batch"] = len(requests)
            if self.batch_rule:
                output.details["batch_rule"] = self.batch_rule
        return outputs

    def _fast(self, prompts, budgets, force, on_token) -> list[Output]:
        budget = max(budgets)
        longest = max(len(p) for p in prompts)
        # Where steps are compiled and captured, a batch decoder's prompts are padded to
        # a multiple of PREFILL_BUCKET: batches of different lengths replay one prefill
        # instead of compiling one each (the padding is hidden from attention). Not for
        # a forced length: the benchmark measures its prompts at their exact length.
        length = None
        if len(prompts) > 1 and not force and self.loaded.device.type == "cuda":
            length = -(-longest // PREFILL_BUCKET) * PREFILL_BUCKET
        decoder = self.fast_decoder(FastDecoder, len(prompts), (length or longest) + budget)
        if decoder.batch == 1 and force and on_token is None:
            # One sequence of a fixed length: the decoder's timed single-sequence path
            # (per-token gaps from CUDA events, no sync per token).
            ids = torch.tensor([prompts[0]], device=self.loaded.device)
            runs = [decoder.generate(ids, budget)]
        else:
            if decoder.batch == 1:
                length = None
            elif length is not None:
                length = min(length, decoder.max_len - budget)
            runs = decoder.generate_batch(
                prompts,
                budget,
                stop_at_end=not force,
                on_token=on_token,
                pad_id=self.pad_id,
                length=length,
            )
        tokenizer = self.loaded.processor
        outputs = []
        for prompt, own, run in zip(prompts, budgets, runs, strict=True):
            tokens = run.tokens[:own]
            outputs.append(
                Output(
                    text=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    token_ids=tokens,
                    prompt_tokens=len(prompt),
                    start=run.start,
                    first_token=run.first_token,
                    end=run.end,
                    inter_token_s=list(run.inter_token_s),
                )
            )
        return outputs

    def _eager(self, prompts, budgets, force, on_token) -> list[Output]:
        loaded = self.loaded
        budget = max(budgets)
        length = max(len(p) for p in prompts)
        ids = torch.tensor(
            [[self.pad_id] * (length - len(p)) + p for p in prompts], device=loaded.device
        )
        mask = torch.tensor(
            [[0] * (length - len(p)) + [1] * len(p) for p in prompts], device=loaded.device
        )
        clock = StepClock(loaded.device, len(prompts), on_token, set() if force else self.ends)
        kwargs = greedy_fixed_length(budget) if force else {"max_new_tokens": budget, **GREEDY}
        synchronize(loaded.device)
        start = time.perf_counter()
        output = loaded.model.generate(
            input_ids=ids,
            attention_mask=mask,
            pad_token_id=self.pad_id,
            stopping_criteria=StoppingCriteriaList([clock]),
            **kwargs,
        )
        synchronize(loaded.device)
        end = time.perf_counter()
        stamps = clock.times or [end]
        new = output[:, length:].tolist()
        tokenizer = loaded.processor
        outputs = []
        for prompt, own, row in zip(prompts, budgets, new, strict=True):
            tokens = tokens_until_end(row, own, set() if force else self.ends)
            times = stamps[: len(tokens)] or [stamps[0]]
            outputs.append(
                Output(
                    text=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    token_ids=tokens,
                    prompt_tokens=len(prompt),
                    start=start,
                    first_token=times[0],
                    end=times[-1] if len(prompts) > 1 else end,
                    inter_token_s=gaps(times),
                    last_token=times[-1],
                )
            )
        return outputs

    def details(self) -> dict:
        if self.decoder is None:
            return {
                "timer": "host clock after a device sync; a stopping criterion syncs and "
                "stamps each step"
            }
        return self.decoder.details(
            "start: host clock after a device sync; first token: after a device sync; "
            "inter-token gaps: CUDA events between graph replays for one sequence of a fixed "
            "length, else the host clock where tokens are read as they are made"
        )

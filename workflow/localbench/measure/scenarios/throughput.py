"""Throughput of a text model: B requests decoded together, the same prompt each.

A decode step of B sequences reads the weights once for all of them, so while the step
stays memory-bound the aggregate rate grows almost B-fold; the per-sequence rate says
what each user of a shared server sees. Every batch size is measured by its own job
(``results/<profile>/throughput/<model>/<backend>/batch-<B>.json``).

The limit each batch size is set against: a step reads the weights once and the KV cache
of every sequence, so B tokens per step take ``weights + B * cache`` bytes at the
measured read bandwidth.
"""

from __future__ import annotations

import torch

from localbench.engine.backends.fast import FastDecoder
from localbench.engine.device import synchronize
from localbench.engine.generation import greedy_fixed_length
from localbench.measure.inputs import prompt_ids
from localbench.measure.observers import RunObserver
from localbench.measure.roofline import kv_cache_bytes, weight_bytes_read_per_token
from localbench.measure.scenarios.common import llama_family_backend
from localbench.measure.stats import Measurement
from localbench.measure.timing import repeat, timed_generate


def _batch_run(run, sequences: list[list[int]]):
    """A batch's run as the observers count it: every sequence's tokens and requests."""
    run.extra["tokens"] = sequences
    run.extra["requests"] = len(sequences)
    run.tokens = sum(len(tokens) for tokens in sequences)
    return run


def _eager(loaded, input_ids: torch.Tensor, settings: dict, observer=None):
    tokenizer = loaded.processor
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kwargs = greedy_fixed_length(settings["new_tokens"])

    def once():
        run = timed_generate(
            loaded.device,
            lambda stop: loaded.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                pad_token_id=pad_id,
                stopping_criteria=stop,
                **kwargs,
            ),
        )
        output = run.extra.pop("output")
        return _batch_run(run, output[:, input_ids.shape[1] :].tolist())

    runs = repeat(once, settings["warmup_runs"], settings["repetitions"], observer)
    return runs, {"timer": "host clock; a stopping criterion syncs and stamps each step"}


def _fast(loaded, input_ids: torch.Tensor, settings: dict, observer=None):
    batch, length = input_ids.shape
    decoder = FastDecoder(loaded.model, max_len=length + settings["new_tokens"], batch=batch)
    prompts = input_ids.tolist()

    def once():
        synchronize(loaded.device)
        sequences = decoder.generate_batch(prompts, settings["new_tokens"], stop_at_end=False)
        return _batch_run(sequences[0].to_run(), [s.tokens for s in sequences])

    runs = repeat(once, settings["warmup_runs"], settings["repetitions"], observer)
    details = decoder.details(
        "host clock after a device sync at the first token and after the last step; "
        "no sync between steps"
    )
    return runs, details


def measure(
    loaded,
    settings: dict,
    backend: str = "eager",
    bandwidth_gb_per_s: float | None = None,
    observer: RunObserver | None = None,
) -> dict:
    """Aggregate and per-sequence decode rates of ``settings["batch_size"]`` sequences.

    ``settings`` holds batch_size, prompt_tokens, new_tokens, warmup_runs, repetitions.
    """
    batch = settings["batch_size"]
    prompt = prompt_ids(loaded.processor, settings["prompt_tokens"])
    input_ids = prompt.repeat(batch, 1).to(loaded.device)
    backend_used, note = llama_family_backend(loaded.model, backend)
    runner = _fast if backend_used == "fast" else _eager
    runs, details = runner(loaded, input_ids, settings, observer)
    new_tokens = settings["new_tokens"]
    for run in runs:
        counts = {len(tokens) for tokens in run.extra["tokens"]}
        if counts != {new_tokens} or len(run.extra["tokens"]) != batch:
            raise RuntimeError(
                f"expected {batch} sequences of {new_tokens} tokens, got lengths {sorted(counts)}"
            )
    # Decode: the steps after the first token, B tokens each.
    decode_s = [run.last_token - run.first_token for run in runs]
    per_sequence = [(new_tokens - 1) / s for s in decode_s]
    metrics = {
        "aggregate_tokens_per_s": Measurement.from_values(
            [batch * rate for rate in per_sequence], "tokens/s"
        ).to_dict(),
        "sequence_tokens_per_s": Measurement.from_values(per_sequence, "tokens/s").to_dict(),
        "ttft_ms": Measurement.from_values([r.first_token_s * 1e3 for r in runs], "ms").to_dict(),
        "latency_ms": Measurement.from_values([r.latency_s * 1e3 for r in runs], "ms").to_dict(),
    }
    first_sequence = runs[-1].extra["tokens"][0]
    result = {
        "metrics": metrics,
        "backend": {"requested": backend, "used": backend_used, "note": note, **details},
        "inputs": {
            "batch_size": batch,
            "prompt_tokens": int(input_ids.shape[1]),
            "new_tokens": new_tokens,
        },
        "same_tokens_in_every_sequence": all(
            tokens == first_sequence for tokens in runs[-1].extra["tokens"]
        ),
        "generated_token_ids": first_sequence,
    }
    if bandwidth_gb_per_s:
        result["limit"] = batch_limit(
            loaded.model, settings, bandwidth_gb_per_s, metrics["aggregate_tokens_per_s"]
        )
    return result


def batch_limit(model, settings: dict, bandwidth_gb_per_s: float, aggregate: dict) -> dict:
    """The aggregate rate the bandwidth allows at this batch size, and the share of it."""
    batch = settings["batch_size"]
    weights = weight_bytes_read_per_token(model)
    element_size = model.get_input_embeddings().weight.element_size()
    position = settings["prompt_tokens"] + settings["new_tokens"] // 2
    cache = kv_cache_bytes(model.config, position, element_size)
    step_bytes = weights + batch * cache
    tokens_per_s = batch * bandwidth_gb_per_s * 1e9 / step_bytes
    return {
        "weight_bytes_per_step": weights,
        "kv_cache_bytes_per_step": batch * cache,
        "bandwidth_gb_per_s": bandwidth_gb_per_s,
        "tokens_per_s": tokens_per_s,
        "percent_of_limit": 100 * aggregate["median"] / tokens_per_s,
        "method": (
            "a decode step reads the weights once and the KV cache of every sequence (at "
            "the average decode position): limit = batch * read bandwidth / step bytes"
        ),
    }

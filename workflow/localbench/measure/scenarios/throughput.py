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

from localbench.engine.generation import Run
from localbench.engine.inference import Engine, Request
from localbench.measure.inputs import prompt_ids
from localbench.measure.observers import RunObserver
from localbench.measure.roofline import kv_cache_bytes, weight_bytes_read_per_token
from localbench.measure.stats import Measurement
from localbench.measure.timing import repeat


def _runs(engine: Engine, prompt: list[int], settings: dict, observer=None):
    """Warm-up and measured runs of ``batch_size`` copies of the prompt decoded together,
    exactly ``new_tokens`` each. A batch's run spans its first request's start to the
    last token of any, and counts every sequence's tokens and requests."""
    requests = [Request(prompt_ids=prompt) for _ in range(settings["batch_size"])]

    def once() -> Run:
        outputs = engine.run(requests, settings["new_tokens"], force_new_tokens=True)
        run = outputs[0].to_run()
        run.last_token = max(o.to_run().last_token for o in outputs)
        run.end = max(o.end for o in outputs)
        run.extra = {"tokens": [o.token_ids for o in outputs], "requests": len(outputs)}
        run.tokens = sum(len(o.token_ids) for o in outputs)
        return run

    return repeat(once, settings["warmup_runs"], settings["repetitions"], observer)


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
    prompt = prompt_ids(loaded.processor, settings["prompt_tokens"])[0].tolist()
    engine = Engine(loaded, backend, max_batch=batch)
    runs = _runs(engine, prompt, settings, observer)
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
        "backend": engine.details(),
        "inputs": {
            "batch_size": batch,
            "prompt_tokens": len(prompt),
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

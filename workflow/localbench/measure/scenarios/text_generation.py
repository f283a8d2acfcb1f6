"""Text generation: a fixed-length prompt, a forced number of greedy new tokens."""

from __future__ import annotations

from localbench.engine.backends.fast import FastDecoder
from localbench.engine.generation import Run, greedy_fixed_length
from localbench.measure.inputs import prompt_ids
from localbench.measure.observers import RunObserver
from localbench.measure.roofline import decode_roofline
from localbench.measure.scenarios.common import generation_metrics, llama_family_backend
from localbench.measure.stats import Measurement
from localbench.measure.timing import repeat, timed_generate


def _eager(loaded, input_ids, bench: dict, observer=None):
    tokenizer = loaded.processor
    attention_mask = input_ids.new_ones(input_ids.shape)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    kwargs = greedy_fixed_length(bench["new_tokens"])

    def once() -> Run:
        return timed_generate(
            loaded.device,
            lambda stop: loaded.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pad_token_id=pad_id,
                stopping_criteria=stop,
                **kwargs,
            ),
        )

    runs = repeat(once, bench["warmup_runs"], bench["repetitions"], observer)
    tokens = runs[-1].extra["output"][0, input_ids.shape[1] :].tolist()
    return runs, tokens, {}


def _fast(loaded, input_ids, bench: dict, observer=None):
    decoder = FastDecoder(loaded.model, max_len=input_ids.shape[1] + bench["new_tokens"])

    def once() -> Run:
        return decoder.generate(input_ids, bench["new_tokens"]).to_run()

    runs = repeat(once, bench["warmup_runs"], bench["repetitions"], observer)
    details = decoder.details(
        "first token: host clock after a device sync; decode: host clock after the last "
        "token's sync; inter-token gaps: CUDA events between graph replays (host clock "
        "on CPU), no sync per token"
    )
    return runs, runs[-1].extra["tokens"], details


def measure(
    loaded,
    bench: dict,
    backend: str = "eager",
    bandwidth_gb_per_s: float | None = None,
    observer: RunObserver | None = None,
):
    """Time to first token, prefill and decode rates, inter-token latency, roofline;
    ``observer`` hears of each run between runs."""
    tokenizer = loaded.processor
    input_ids = prompt_ids(tokenizer, bench["prompt_tokens"]).to(loaded.device)
    backend_used, note = llama_family_backend(loaded.model, backend)
    runner = _fast if backend_used == "fast" else _eager
    runs, tokens, details = runner(loaded, input_ids, bench, observer)
    for run in runs:
        if run.tokens != bench["new_tokens"]:
            raise RuntimeError(
                f"generation produced {run.tokens} tokens, {bench['new_tokens']} were forced"
            )
    metrics = generation_metrics(runs)
    metrics["prefill_tokens_per_s"] = Measurement.from_values(
        [bench["prompt_tokens"] / r.first_token_s for r in runs], "tokens/s"
    ).to_dict()
    result = {
        "metrics": metrics,
        "backend": {"requested": backend, "used": backend_used, "note": note, **details},
        "inputs": {"prompt_tokens": int(input_ids.shape[1]), "new_tokens": bench["new_tokens"]},
        "generated_token_ids": tokens,
        "sample_output": tokenizer.decode(tokens, skip_special_tokens=True)[:200],
    }
    if bandwidth_gb_per_s:
        roofline = decode_roofline(
            loaded.model, bench["prompt_tokens"], bench["new_tokens"], bandwidth_gb_per_s
        )
        result["roofline"] = {
            **roofline.to_dict(),
            "decode_percent_of_roofline": 100
            * metrics["decode_tokens_per_s"]["median"]
            / roofline.tokens_per_s,
        }
    return result

"""Text generation: a fixed-length prompt, a forced number of greedy new tokens."""

from __future__ import annotations

from localbench.inputs import prompt_ids
from localbench.scenarios.common import generation_metrics
from localbench.stats import Measurement
from localbench.timing import greedy_fixed_length, repeat, timed_generate


def measure(loaded, bench: dict) -> dict:
    """Time to first token, prefill and decode rates, inter-token latency."""
    tokenizer = loaded.processor
    input_ids = prompt_ids(tokenizer, bench["prompt_tokens"]).to(loaded.device)
    attention_mask = input_ids.new_ones(input_ids.shape)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    kwargs = greedy_fixed_length(bench["new_tokens"])

    def once():
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

    runs = repeat(once, bench["warmup_runs"], bench["repetitions"])
    for run in runs:
        if run.tokens != bench["new_tokens"]:
            raise RuntimeError(
                f"generate produced {run.tokens} tokens, {bench['new_tokens']} were forced"
            )
    metrics = generation_metrics(runs)
    metrics["prefill_tokens_per_s"] = Measurement.from_values(
        [bench["prompt_tokens"] / r.first_token_s for r in runs], "tokens/s"
    ).to_dict()
    sample = runs[-1].extra["output"][0, input_ids.shape[1] :]
    return {
        "metrics": metrics,
        "inputs": {"prompt_tokens": int(input_ids.shape[1]), "new_tokens": bench["new_tokens"]},
        "sample_output": tokenizer.decode(sample, skip_special_tokens=True)[:200],
    }

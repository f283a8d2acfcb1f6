"""Text generation: a fixed-length prompt, a forced number of greedy new tokens."""

from __future__ import annotations

from localbench.engine.inference import Engine, Request
from localbench.measure.inputs import prompt_ids
from localbench.measure.observers import RunObserver
from localbench.measure.roofline import decode_roofline
from localbench.measure.scenarios.common import engine_runs, generation_metrics
from localbench.measure.stats import Measurement


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
    engine = Engine(loaded, backend, max_batch=1)
    runs = engine_runs(engine, Request(prompt_ids=input_ids[0].tolist()), bench, observer)
    tokens = runs[-1].extra["tokens"]
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
        "backend": engine.details(),
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

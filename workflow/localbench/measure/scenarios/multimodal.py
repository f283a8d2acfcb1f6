"""Multimodal question answering (DeepSeek-VL2): one fixed image and question, forced
answer length.

Latency covers the whole request: tiling and preprocessing, the vision tower and
projector over every tile, the language model's prefill over the prompt with its
image tokens, and the decode. The image-side work and the prefill are also timed
apart, because tiling makes the prompt long (421 to 2,101 image tokens per image).
"""

from __future__ import annotations

from localbench.engine.generation import Run
from localbench.engine.inference import Engine, Request
from localbench.measure.inputs import QUESTION, benchmark_image
from localbench.measure.scenarios.common import engine_runs, generation_metrics
from localbench.measure.stats import Measurement


def _embedded(run: Run) -> float:
    """When the run's prompt embeddings were ready (host clock, after a device sync)."""
    return run.extra["output"].details["embeddings_ready"]


def measure(loaded, bench: dict, backend: str = "eager", observer=None) -> dict:
    """Latency, image-side time, prefill time and rate, decode rate, first-token time;
    ``observer`` hears of each run between runs."""
    width, height = bench["image_size"]
    image = benchmark_image(width, height)
    # The engine runs DeepSeek-VL2 eager, one request at a time (its note says so).
    engine = Engine(loaded, backend)
    runs = engine_runs(engine, Request(image=image, text=QUESTION), bench, observer)
    for run in runs:
        if run.tokens != bench["new_tokens"]:
            raise RuntimeError(
                f"generation produced {run.tokens} tokens, {bench['new_tokens']} were forced"
            )
    output = runs[-1].extra["output"]
    prompt_tokens = output.prompt_tokens
    metrics = generation_metrics(runs)
    metrics["images_per_s"] = Measurement.from_values(
        [1 / r.latency_s for r in runs], "images/s"
    ).to_dict()
    metrics["image_embedding_ms"] = Measurement.from_values(
        [(_embedded(r) - r.start) * 1e3 for r in runs], "ms"
    ).to_dict()
    prefill_s = [r.first_token - _embedded(r) for r in runs]
    metrics["prefill_ms"] = Measurement.from_values([s * 1e3 for s in prefill_s], "ms").to_dict()
    metrics["prefill_tokens_per_s"] = Measurement.from_values(
        [prompt_tokens / s for s in prefill_s], "tokens/s"
    ).to_dict()
    return {
        "metrics": metrics,
        "backend": engine.details(),
        "inputs": {
            "image_size": [width, height],
            "question": QUESTION,
            "tiling": output.details["tiling"],
            "tiles": output.details["tiles"],
            "image_tokens": output.details["image_tokens"],
            "prompt_tokens": prompt_tokens,
            "new_tokens": bench["new_tokens"],
        },
        "method_notes": {
            "image_embedding_ms": (
                "request start to the prompt embeddings being ready (tiling, preprocessing, "
                "vision tower and projector over every tile), after a device sync"
            ),
            "prefill_ms": (
                "embeddings ready to the first generated token (language-model prefill over "
                "the whole prompt, image tokens included, and the first step)"
            ),
        },
        "generated_token_ids": output.token_ids,
        "sample_output": output.text[:200],
    }

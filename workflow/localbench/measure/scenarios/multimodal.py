"""Multimodal question answering (DeepSeek-VL2): one fixed image and question, forced
answer length.

Latency covers the whole request: tiling and preprocessing, the vision tower and
projector over every tile, the language model's prefill over the prompt with its
image tokens, and the decode. The image-side work and the prefill are also timed
apart, because tiling makes the prompt long (421 to 2,101 image tokens per image).
"""

from __future__ import annotations

import time

import torch

from localbench.engine.device import synchronize
from localbench.engine.generation import Run, greedy_fixed_length
from localbench.measure.inputs import QUESTION, benchmark_image
from localbench.measure.scenarios.common import generation_metrics
from localbench.measure.stats import Measurement
from localbench.measure.timing import repeat, timed_generate


def _eager(loaded, image, bench: dict, observer=None):
    model, processor = loaded.model, loaded.processor
    kwargs = greedy_fixed_length(bench["new_tokens"])
    tokenizer = processor.tokenizer
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )

    def once() -> Run:
        stamps = {}

        def request(stopping_criteria):
            # Preprocessing is part of the request, so it runs inside the timed call.
            inputs = processor(image, QUESTION).to(loaded.device)
            embeds = model.embed(
                inputs.input_ids, processor.image_token_id, inputs.pixel_values, inputs.tiling
            )
            synchronize(loaded.device)
            stamps["embedded"] = time.perf_counter()
            stamps["inputs"] = inputs
            return model.language.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad_id,
                stopping_criteria=stopping_criteria,
                **kwargs,
            )

        run = timed_generate(loaded.device, request)
        run.extra.update(stamps)
        return run

    return repeat(once, bench["warmup_runs"], bench["repetitions"], observer)


def measure(loaded, bench: dict, backend: str = "eager", observer=None) -> dict:
    """Latency, image-side time, prefill time and rate, decode rate, first-token time;
    ``observer`` hears of each run between runs."""
    width, height = bench["image_size"]
    image = benchmark_image(width, height)
    note = None
    if backend == "fast":
        note = "fast backend not available (no fast decoder for DeepSeek-VL2's MoE); ran eager"
    runs = _eager(loaded, image, bench, observer)
    for run in runs:
        if run.tokens != bench["new_tokens"]:
            raise RuntimeError(
                f"generation produced {run.tokens} tokens, {bench['new_tokens']} were forced"
            )
    inputs = runs[-1].extra["inputs"]
    prompt_tokens = int(inputs.input_ids.shape[1])
    metrics = generation_metrics(runs)
    metrics["images_per_s"] = Measurement.from_values(
        [1 / r.latency_s for r in runs], "images/s"
    ).to_dict()
    metrics["image_embedding_ms"] = Measurement.from_values(
        [(r.extra["embedded"] - r.start) * 1e3 for r in runs], "ms"
    ).to_dict()
    prefill_s = [r.first_token - r.extra["embedded"] for r in runs]
    metrics["prefill_ms"] = Measurement.from_values([s * 1e3 for s in prefill_s], "ms").to_dict()
    metrics["prefill_tokens_per_s"] = Measurement.from_values(
        [prompt_tokens / s for s in prefill_s], "tokens/s"
    ).to_dict()
    tokens = runs[-1].extra["output"][0, -bench["new_tokens"] :].tolist()
    text = loaded.processor.decode(tokens, skip_special_tokens=True)
    return {
        "metrics": metrics,
        "backend": {"requested": backend, "used": "eager", "note": note},
        "inputs": {
            "image_size": [width, height],
            "question": QUESTION,
            "tiling": [inputs.tiling.width_tiles, inputs.tiling.height_tiles],
            "tiles": inputs.tiling.tiles,
            "image_tokens": inputs.image_tokens,
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
        "generated_token_ids": tokens,
        "sample_output": text.strip()[:200],
    }

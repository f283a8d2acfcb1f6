"""Image captioning and visual question answering: one fixed image, forced token count.

Latency covers the whole request: image preprocessing, vision encoder, text generation.
"""

from __future__ import annotations

import torch

from localbench.engine.backends import blip
from localbench.engine.generation import Run, greedy_fixed_length
from localbench.engine.vision import VQA_PROMPT, fast_decoder_class
from localbench.measure.inputs import QUESTION, benchmark_image
from localbench.measure.scenarios.common import generation_metrics, repeat_fast_requests
from localbench.measure.stats import Measurement
from localbench.measure.timing import repeat, timed_generate


def _inputs(loaded, image, prompt):
    # Preprocessing is part of the request, so it runs inside the timed call.
    if prompt is None:
        inputs = loaded.processor(images=image, return_tensors="pt")
    else:
        inputs = loaded.processor(images=image, text=prompt, return_tensors="pt")
    inputs = inputs.to(loaded.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
    return inputs


def _eager(loaded, image, prompt, bench: dict, observer=None):
    kwargs = greedy_fixed_length(bench["new_tokens"])

    def request(stopping_criteria):
        inputs = _inputs(loaded, image, prompt)
        return loaded.model.generate(**inputs, stopping_criteria=stopping_criteria, **kwargs)

    def once() -> Run:
        return timed_generate(loaded.device, request)

    runs = repeat(once, bench["warmup_runs"], bench["repetitions"], observer)
    return runs, runs[-1].extra["output"][0, -bench["new_tokens"] :].tolist(), {}


def _prompt_ids(loaded, inputs):
    """The decoder prompt: the processor's ids (BLIP-2), or BLIP's start token."""
    if "input_ids" in inputs:
        return inputs["input_ids"]
    return torch.tensor([blip.start_ids(loaded.model)], device=loaded.device)


def _fast(loaded, image, prompt, bench: dict, observer=None):
    decoder_class, _ = fast_decoder_class(loaded.model)
    prompt_length = _prompt_ids(loaded, _inputs(loaded, image, prompt)).shape[1]
    decoder = decoder_class(loaded.model, max_len=prompt_length + bench["new_tokens"])

    def request():
        inputs = _inputs(loaded, image, prompt)
        decoder.encode(inputs["pixel_values"])
        return decoder.generate(_prompt_ids(loaded, inputs), bench["new_tokens"])

    return repeat_fast_requests(
        decoder, request, loaded.device, bench, "preprocessing and the vision tower", observer
    )


def measure(loaded, bench: dict, backend: str = "eager", observer=None) -> dict:
    """Per-image latency p50/p90, images/s, tokens generated, first-token time;
    ``observer`` hears of each run between runs."""
    width, height = bench["image_size"]
    image = benchmark_image(width, height)
    prompt = (
        VQA_PROMPT.format(question=QUESTION) if loaded.task == "visual-question-answering" else None
    )
    backend_used, note = backend, None
    if backend == "fast":
        decoder_class, why = fast_decoder_class(loaded.model)
        if decoder_class is None:
            backend_used, note = "eager", f"fast backend not available ({why}); ran eager"
    runner = _fast if backend_used == "fast" else _eager
    runs, tokens, details = runner(loaded, image, prompt, bench, observer)
    metrics = generation_metrics(runs)
    metrics["images_per_s"] = Measurement.from_values(
        [1 / r.latency_s for r in runs], "images/s"
    ).to_dict()
    text = loaded.processor.tokenizer.decode(tokens, skip_special_tokens=True)
    return {
        "metrics": metrics,
        "backend": {"requested": backend, "used": backend_used, "note": note, **details},
        "inputs": {
            "image_size": [width, height],
            "prompt": prompt,
            "new_tokens": bench["new_tokens"],
        },
        "generated_token_ids": tokens,
        "sample_output": text.strip()[:200],
    }

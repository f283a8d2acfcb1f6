"""Image captioning and visual question answering: one fixed image, forced token count.

Latency covers the whole request: image preprocessing, vision encoder, text generation.
"""

from __future__ import annotations

from localbench.inputs import QUESTION, benchmark_image
from localbench.scenarios.common import generation_metrics
from localbench.stats import Measurement
from localbench.timing import Run, greedy_fixed_length, repeat, timed_generate

VQA_PROMPT = "Question: {question} Answer:"


def measure(loaded, bench: dict) -> dict:
    """Per-image latency p50/p90, images/s, tokens generated, first-token time."""
    width, height = bench["image_size"]
    image = benchmark_image(width, height)
    prompt = (
        VQA_PROMPT.format(question=QUESTION) if loaded.task == "visual-question-answering" else None
    )
    kwargs = greedy_fixed_length(bench["new_tokens"])
    processor = loaded.processor

    def request(stopping_criteria):
        # Preprocessing is part of the request, so it runs inside the timed call.
        if prompt is None:
            inputs = processor(images=image, return_tensors="pt")
        else:
            inputs = processor(images=image, text=prompt, return_tensors="pt")
        inputs = inputs.to(loaded.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
        return loaded.model.generate(**inputs, stopping_criteria=stopping_criteria, **kwargs)

    def once() -> Run:
        return timed_generate(loaded.device, request)

    runs = repeat(once, bench["warmup_runs"], bench["repetitions"])
    metrics = generation_metrics(runs)
    metrics["images_per_s"] = Measurement.from_values(
        [1 / r.latency_s for r in runs], "images/s"
    ).to_dict()
    text = processor.batch_decode(runs[-1].extra["output"], skip_special_tokens=True)[0]
    return {
        "metrics": metrics,
        "inputs": {
            "image_size": [width, height],
            "prompt": prompt,
            "new_tokens": bench["new_tokens"],
        },
        "sample_output": text.strip()[:200],
    }

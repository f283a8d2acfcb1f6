"""Image captioning and visual question answering: one fixed image, forced token count.

Latency covers the whole request: image preprocessing, vision encoder, text generation.
The request runs through the inference engine (:mod:`localbench.engine.vision`), as the
pipelines' requests do.
"""

from __future__ import annotations

from localbench.engine.inference import Engine, Request
from localbench.engine.vision import VQA_PROMPT
from localbench.measure.inputs import QUESTION, benchmark_image
from localbench.measure.scenarios.common import engine_runs, generation_metrics
from localbench.measure.stats import Measurement


def measure(loaded, bench: dict, backend: str = "eager", observer=None) -> dict:
    """Per-image latency p50/p90, images/s, tokens generated, first-token time;
    ``observer`` hears of each run between runs."""
    width, height = bench["image_size"]
    image = benchmark_image(width, height)
    question = QUESTION if loaded.task == "visual-question-answering" else None
    # One request at a time: the benchmark measures one image's latency.
    engine = Engine(loaded, backend, max_batch=1)
    runs = engine_runs(engine, Request(image=image, text=question), bench, observer)
    output = runs[-1].extra["output"]
    metrics = generation_metrics(runs)
    metrics["images_per_s"] = Measurement.from_values(
        [1 / r.latency_s for r in runs], "images/s"
    ).to_dict()
    return {
        "metrics": metrics,
        "backend": engine.details(),
        "inputs": {
            "image_size": [width, height],
            "prompt": None if question is None else VQA_PROMPT.format(question=question),
            "new_tokens": bench["new_tokens"],
        },
        "generated_token_ids": output.token_ids,
        "sample_output": output.text[:200],
    }

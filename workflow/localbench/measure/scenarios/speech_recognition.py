"""Speech recognition: fixed audio, real-time factor and latency.

Each run is one request through the inference engine (:mod:`localbench.engine.speech`),
forced to ``new_tokens`` new tokens. Latency covers feature extraction and generation
(the engine starts a request's clock after a device sync, before feature extraction);
the real-time factor is that latency divided by the audio's duration (below 1.0 is
faster than playback).
"""

from __future__ import annotations

from localbench.engine.generation import Run
from localbench.engine.inference import Engine, Request
from localbench.engine.speech import SAMPLING_RATE
from localbench.measure.inputs import benchmark_audio
from localbench.measure.scenarios.common import generation_metrics
from localbench.measure.stats import Measurement
from localbench.measure.timing import repeat


def measure(loaded, bench: dict, backend: str = "eager", observer=None) -> dict:
    """Real-time factor, latency, first-token time and decode rate of transcription;
    ``observer`` hears of each run between runs."""
    seconds = float(bench["audio_seconds"])
    new_tokens = bench["new_tokens"]
    request = Request(audio=benchmark_audio(seconds, SAMPLING_RATE))
    engine = Engine(loaded, backend)
    room = engine.runner.budget(request, new_tokens)
    if room < new_tokens:
        raise ValueError(
            f"new_tokens is {new_tokens}; Whisper's decoder has room for {room} after its prompt"
        )

    def once() -> Run:
        return engine.run([request], new_tokens, force_new_tokens=True)[0].to_run()

    try:
        runs = repeat(once, bench["warmup_runs"], bench["repetitions"], observer)
        details = engine.details()
    finally:
        engine.close()
    output = runs[-1].extra["output"]
    metrics = generation_metrics(runs)
    metrics["real_time_factor"] = Measurement.from_values(
        [r.latency_s / seconds for r in runs], "x"
    ).to_dict()
    return {
        "metrics": metrics,
        "backend": details,
        "inputs": {
            "audio_seconds": seconds,
            "sampling_rate": SAMPLING_RATE,
            "new_tokens": new_tokens,
        },
        "generated_token_ids": output.token_ids,
        "sample_output": output.text[:200],
    }

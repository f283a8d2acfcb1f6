"""Speech recognition: fixed audio, real-time factor and latency.

Latency covers feature extraction and generation; the real-time factor is that latency
divided by the audio's duration (below 1.0 is faster than playback).
"""

from __future__ import annotations

import time

from localbench.device import synchronize
from localbench.inputs import benchmark_audio
from localbench.scenarios.common import generation_metrics
from localbench.stats import Measurement
from localbench.timing import Run, TokenClock, greedy_fixed_length, repeat

SAMPLING_RATE = 16_000


def measure(loaded, bench: dict) -> dict:
    """Real-time factor, latency, first-token time and decode rate of transcription."""
    seconds = float(bench["audio_seconds"])
    audio = benchmark_audio(seconds, SAMPLING_RATE)
    processor = loaded.processor
    kwargs = greedy_fixed_length(bench["new_tokens"])

    def once() -> Run:
        from transformers import StoppingCriteriaList

        clock = TokenClock(loaded.device)
        synchronize(loaded.device)
        start = time.perf_counter()
        features = processor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        input_features = features.input_features.to(loaded.device, loaded.dtype)
        output = loaded.model.generate(
            input_features=input_features,
            language="en",
            task="transcribe",
            stopping_criteria=StoppingCriteriaList([clock]),
            **kwargs,
        )
        synchronize(loaded.device)
        end = time.perf_counter()
        return Run(start=start, token_times=clock.times, end=end, extra={"output": output})

    runs = repeat(once, bench["warmup_runs"], bench["repetitions"])
    metrics = generation_metrics(runs)
    metrics["real_time_factor"] = Measurement.from_values(
        [r.latency_s / seconds for r in runs], "x"
    ).to_dict()
    text = processor.batch_decode(runs[-1].extra["output"], skip_special_tokens=True)[0]
    return {
        "metrics": metrics,
        "inputs": {
            "audio_seconds": seconds,
            "sampling_rate": SAMPLING_RATE,
            "new_tokens": bench["new_tokens"],
        },
        "sample_output": text.strip()[:200],
    }

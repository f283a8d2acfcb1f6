"""Speech recognition: fixed audio, real-time factor and latency.

Latency covers feature extraction and generation; the real-time factor is that latency
divided by the audio's duration (below 1.0 is faster than playback).
"""

from __future__ import annotations

import torch
from transformers import GenerationMixin

from localbench.engine.backends.whisper import WhisperFastDecoder
from localbench.engine.generation import Run, greedy_fixed_length
from localbench.engine.speech import SAMPLING_RATE, decoder_prompt
from localbench.measure.inputs import benchmark_audio
from localbench.measure.scenarios.common import generation_metrics, repeat_fast_requests
from localbench.measure.stats import Measurement
from localbench.measure.timing import repeat, timed_generate


def _features(loaded, audio):
    features = loaded.processor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    return features.input_features.to(loaded.device, loaded.dtype)


def _eager(loaded, audio, prompt, bench: dict, observer=None):
    kwargs = greedy_fixed_length(bench["new_tokens"])

    def request(stopping_criteria):
        # Feature extraction is part of the request, so it runs inside the timed call.
        # Short-form decoding of one 30 s window through the generic generate(): Whisper's
        # own generate() adds timestamp-driven segment seeking, which turns a forced token
        # count into a variable one. The prompt fixes language and task, so no language
        # detection pass runs either.
        return GenerationMixin.generate(
            loaded.model,
            input_features=_features(loaded, audio),
            decoder_input_ids=prompt,
            stopping_criteria=stopping_criteria,
            **kwargs,
        )

    def once() -> Run:
        return timed_generate(loaded.device, request)

    runs = repeat(once, bench["warmup_runs"], bench["repetitions"], observer)
    return runs, runs[-1].extra["output"][0, prompt.shape[1] :].tolist(), {}


def _fast(loaded, audio, prompt, bench: dict, observer=None):
    decoder = WhisperFastDecoder(loaded.model, max_len=prompt.shape[1] + bench["new_tokens"])

    def request():
        decoder.encode(_features(loaded, audio))
        return decoder.generate(prompt, bench["new_tokens"])

    return repeat_fast_requests(
        decoder, request, loaded.device, bench, "feature extraction and the encoder", observer
    )


def measure(loaded, bench: dict, backend: str = "eager", observer=None) -> dict:
    """Real-time factor, latency, first-token time and decode rate of transcription;
    ``observer`` hears of each run between runs."""
    seconds = float(bench["audio_seconds"])
    audio = benchmark_audio(seconds, SAMPLING_RATE)
    prompt = torch.tensor([decoder_prompt(loaded.model.generation_config)], device=loaded.device)
    runner = _fast if backend == "fast" else _eager
    runs, tokens, details = runner(loaded, audio, prompt, bench, observer)
    metrics = generation_metrics(runs)
    metrics["real_time_factor"] = Measurement.from_values(
        [r.latency_s / seconds for r in runs], "x"
    ).to_dict()
    text = loaded.processor.decode(tokens, skip_special_tokens=True)
    return {
        "metrics": metrics,
        "backend": {"requested": backend, "used": backend, "note": None, **details},
        "inputs": {
            "audio_seconds": seconds,
            "sampling_rate": SAMPLING_RATE,
            "new_tokens": bench["new_tokens"],
        },
        "generated_token_ids": tokens,
        "sample_output": text.strip()[:200],
    }

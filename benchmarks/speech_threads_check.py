"""The speech scenario's first-token time under a job's thread settings, in one process.

Runs ``measure/scenarios/speech_recognition.measure`` (Whisper, fast backend) plainly,
inside the benchmark's RSS sampler, and after ``use_threads(16)``, then once on the eager
backend. Run it twice, with and without ``OMP_NUM_THREADS=1`` (what Snakemake sets for a
job under ``--cores 1``), to see what starting OpenMP for one thread costs:

    python benchmarks/speech_threads_check.py [model folder]
    OMP_NUM_THREADS=1 python benchmarks/speech_threads_check.py [model folder]

A diagnostic for CUDA (docs/benchmarks/2026-12-03-cuda-h200-engine-before-after.md).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

import torch  # noqa: E402
from localbench.engine.device import RssSampler, use_threads  # noqa: E402
from localbench.engine.loading import load_model  # noqa: E402
from localbench.measure.scenarios import speech_recognition  # noqa: E402

BENCH = {"audio_seconds": 10.0, "new_tokens": 32, "warmup_runs": 1, "repetitions": 3}


def show(tag: str, result: dict) -> None:
    metrics = result["metrics"]
    print(
        f"{tag}: first token {metrics['ttft_ms']['median']:.2f} ms "
        f"(min {metrics['ttft_ms']['min']:.2f}), latency {metrics['latency_ms']['median']:.2f} ms",
        flush=True,
    )


def measure(backend: str, sampler: bool) -> dict:
    with RssSampler() if sampler else contextlib.nullcontext(), torch.inference_mode():
        return speech_recognition.measure(LOADED, BENCH, backend)


model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "models/whisper-base")
LOADED = load_model(model_dir, "speech-recognition", torch.bfloat16, torch.device("cuda"))
for tag, sampler in (("plain", False), ("plain again", False), ("rss sampler", True)):
    show(tag, measure("fast", sampler))
use_threads(16)
show("16 threads + rss sampler", measure("fast", True))
show("eager, 16 threads", measure("eager", False))

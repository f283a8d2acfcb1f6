"""Metrics shared by every generating scenario, computed from timed runs."""

from __future__ import annotations

import time
from collections.abc import Callable

from localbench.engine.device import synchronize
from localbench.engine.generation import Run
from localbench.engine.inference import Engine, Request
from localbench.measure.stats import Measurement
from localbench.measure.timing import repeat


def generation_metrics(runs: list[Run]) -> dict:
    """Latency, first-token time, decode rate and inter-token latency over ``runs``."""
    gaps_ms = [gap * 1e3 for run in runs for gap in run.inter_token_s]
    metrics = {
        "latency_ms": Measurement.from_values([r.latency_s * 1e3 for r in runs], "ms").to_dict(),
        "ttft_ms": Measurement.from_values([r.first_token_s * 1e3 for r in runs], "ms").to_dict(),
        "tokens_generated": Measurement.from_values([r.tokens for r in runs], "tokens").to_dict(),
    }
    # A run's decode rate needs two tokens; inter-token gaps exist exactly then.
    if gaps_ms:
        metrics["decode_tokens_per_s"] = Measurement.from_values(
            [r.decode_tokens_per_s for r in runs], "tokens/s"
        ).to_dict()
        metrics["inter_token_latency_ms"] = Measurement.from_values(gaps_ms, "ms").to_dict()
    return metrics


def repeat_fast_requests(
    decoder, request: Callable, device, bench: dict, before: str, observer=None
):
    """Warm-up and measured runs of ``request()`` (preprocessing, encoder, then the fast
    ``decoder``'s generate, whose ``FastRun`` it returns), each timed from ``before`` the
    preprocessing, after a device sync. Returns the runs, the last run's tokens and what
    the result records about the decoder."""

    def once() -> Run:
        synchronize(device)
        start = time.perf_counter()
        return request().to_run(start)

    runs = repeat(once, bench["warmup_runs"], bench["repetitions"], observer)
    details = decoder.details(
        f"start: host clock after a device sync, before {before}; first token: after a "
        "device sync; inter-token gaps: CUDA events between graph replays (host clock on "
        "CPU), no sync per token"
    )
    return runs, runs[-1].extra["tokens"], details


def engine_runs(engine: Engine, request: Request, bench: dict, observer=None) -> list[Run]:
    """Warm-up and measured runs of ``request`` through ``engine``, alone, at the
    benchmark's fixed length (``force_new_tokens``). The engine times a request from
    before its preprocessing, after a device sync; each run's ``extra["output"]`` is the
    engine's output."""

    def once() -> Run:
        output = engine.run([request], bench["new_tokens"], force_new_tokens=True)[0]
        # Eager runners stamp each token as generate() makes it: the run's last token is
        # that stamp, before generate() returns (the output's end).
        return output.to_run()

    return repeat(once, bench["warmup_runs"], bench["repetitions"], observer)

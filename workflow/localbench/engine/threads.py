"""The OpenMP thread count a job's torch starts with, set before torch is imported.

Snakemake sets ``OMP_NUM_THREADS`` to a job's cores: 1 under ``--cores 1``, the way the
benchmark runs one job at a time. A job then gives torch the config's ``threads``
(:func:`localbench.engine.device.use_threads`), but the OpenMP runtime has already read
the 1 at import. On a 16-core H200 machine that mix made the CPU half of a Whisper
request (feature extraction) take 145 ms instead of 13 ms, the same operators with the
same 16 threads, only started from 1 (docs/benchmarks/2026-12-03-cuda-h200-engine-
before-after.md). So every job that runs torch sets the variable to its own count first.
Nothing here imports torch.
"""

from __future__ import annotations

import os


def start_openmp_with(threads: int) -> int:
    """Make ``threads`` the OpenMP runtime's count from the start: call before torch is
    imported. Returns ``threads``."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def openmp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as this process started its OpenMP runtime (None if unset)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else None

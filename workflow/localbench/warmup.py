"""Device warm-up: what it costs to bring the device up, and what it can do once up.

Each benchmark job runs in its own process and warms up again (its warm-up runs are
not counted); this record says what the first touch of the device costs, and measures
the two ceilings every later figure is judged against: memory copy bandwidth and
matrix-multiply throughput.
"""

from __future__ import annotations

import time

import torch

from localbench.device import synchronize
from localbench.stats import Measurement


def _timed(device: torch.device, fn) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def copy_bandwidth(device: torch.device, megabytes: int, repetitions: int) -> Measurement:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    count = megabytes * 1024 * 1024 // 4
    source = torch.rand(count, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    seconds = [_timed(device, lambda: target.copy_(source)) for _ in range(repetitions)]
    moved = 2 * source.numel() * source.element_size()
    return Measurement.from_values([moved / s / 1e9 for s in seconds], "GB/s")


def matmul_throughput(
    device: torch.device, n: int, dtype: torch.dtype, repetitions: int
) -> Measurement:
    """Square matrix-multiply throughput in TFLOP/s on random data (never zeros)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    seconds = [_timed(device, lambda: torch.matmul(a, b)) for _ in range(repetitions)]
    return Measurement.from_values([2 * n**3 / s / 1e12 for s in seconds], "TFLOP/s")


def warm_up(device: torch.device, dtype_name: str) -> dict:
    """Initialise ``device`` and measure first-touch cost, copy bandwidth and matmul rate."""
    dtype = getattr(torch, dtype_name)
    big = device.type != "cpu"
    start = time.perf_counter()
    torch.ones(1, device=device)
    synchronize(device)
    init_s = time.perf_counter() - start

    n = 8192 if big else 1024
    square = torch.randn(n, n, device=device, dtype=dtype)
    first_matmul_s = _timed(device, lambda: torch.matmul(square, square))

    bandwidth = copy_bandwidth(device, megabytes=1024 if big else 256, repetitions=10)
    throughput = matmul_throughput(device, n=n, dtype=dtype, repetitions=10 if big else 5)
    return {
        "device": str(device),
        "dtype": dtype_name,
        "init_s": init_s,
        "first_matmul_s": first_matmul_s,
        "copy_bandwidth_gb_per_s": bandwidth.to_dict(),
        "matmul_tflops": throughput.to_dict(),
        "matmul_size": n,
        "method": (
            "device initialised by its first allocation; copy bandwidth counts bytes read "
            "plus written; every timing between device synchronisations; median of the runs"
        ),
    }

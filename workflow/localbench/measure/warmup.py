"""Device warm-up: what it costs to bring the device up, and what it can do once up.

Each benchmark job runs in its own process and warms up again (its warm-up runs are
not counted); this record says what the first touch of the device costs, and measures
the ceilings every later figure is judged against: memory copy and read bandwidth and
matrix-multiply throughput.
"""

from __future__ import annotations

import time

import torch

from localbench.engine.device import (
    available_memory_bytes,
    last_level_cache_bytes,
    synchronize,
    use_threads,
)
from localbench.engine.threads import openmp_record
from localbench.measure.energy import warmup_energy
from localbench.measure.stats import Measurement


def _timed(device: torch.device, fn) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


# Each copy buffer is at least this large, and this many times the last-level cache, so
# the copy streams through memory: a copy that fits in the cache measures the cache.
MIN_COPY_BUFFER_BYTES = 1 << 30
CACHE_MULTIPLE = 4
# Two buffers of at most an eighth of the available memory each: a quarter in all.
MEMORY_FRACTION_PER_BUFFER = 8


def copy_buffer_bytes(last_level_cache_bytes: int | None, available_bytes: int) -> int:
    """The size of each of the copy's two buffers: the larger of 1 GiB and four times the
    last-level cache, within an eighth of the available memory (64 MiB at the least)."""
    wanted = max(MIN_COPY_BUFFER_BYTES, CACHE_MULTIPLE * (last_level_cache_bytes or 0))
    return max(64 << 20, min(wanted, available_bytes // MEMORY_FRACTION_PER_BUFFER))


def copy_bandwidth(device: torch.device, buffer_bytes: int, repetitions: int) -> Measurement:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    count = buffer_bytes // 4
    source = torch.rand(count, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    seconds = [_timed(device, lambda: target.copy_(source)) for _ in range(repetitions)]
    moved = 2 * source.numel() * source.element_size()
    return Measurement.from_values([moved / s / 1e9 for s in seconds], "GB/s")


def read_bandwidth(device: torch.device, buffer_bytes: int, repetitions: int) -> Measurement:
    """Read bandwidth in GB/s: the sum of a buffer, which reads it once and writes
    nothing. A decode step only reads its weights, and a read stream can run faster than
    a copy's reads and writes together, so this is the decode roofline's ceiling."""
    source = torch.rand(buffer_bytes // 4, device=device)
    source.sum()
    seconds = [_timed(device, lambda: source.sum()) for _ in range(repetitions)]
    moved = source.numel() * source.element_size()
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


def warm_up(device: torch.device, dtype_name: str, threads: int) -> dict:
    """Initialise ``device`` and measure first-touch cost, copy bandwidth and matmul rate,
    on ``threads`` CPU threads (the benchmark jobs' own count)."""
    dtype = getattr(torch, dtype_name)
    big = device.type != "cpu"
    torch_threads = use_threads(threads)
    cache_bytes = last_level_cache_bytes(device)
    available, _source = available_memory_bytes(device)
    buffer_bytes = copy_buffer_bytes(cache_bytes, available)
    start = time.perf_counter()
    torch.ones(1, device=device)
    synchronize(device)
    init_s = time.perf_counter() - start
    # The power the device draws while it is up and waiting, before any heavy work (a GPU
    # stays in a higher power state for seconds after it): every result's energy is
    # stated above it. A pause of a few seconds, only where a counter can be read.
    energy = warmup_energy(device)

    n = 8192 if big else 1024
    square = torch.randn(n, n, device=device, dtype=dtype)
    first_matmul_s = _timed(device, lambda: torch.matmul(square, square))

    bandwidth = copy_bandwidth(device, buffer_bytes, repetitions=10 if big else 5)
    reading = read_bandwidth(device, buffer_bytes, repetitions=10 if big else 5)
    throughput = matmul_throughput(device, n=n, dtype=dtype, repetitions=10 if big else 5)
    return {
        "device": str(device),
        "dtype": dtype_name,
        "init_s": init_s,
        "first_matmul_s": first_matmul_s,
        "copy_bandwidth_gb_per_s": bandwidth.to_dict(),
        "read_bandwidth_gb_per_s": reading.to_dict(),
        "matmul_tflops": throughput.to_dict(),
        "matmul_size": n,
        "torch_threads": torch_threads,
        **openmp_record(),
        "copy_buffer_bytes": buffer_bytes,
        "last_level_cache_bytes": cache_bytes,
        "energy": energy,
        "method": (
            "device initialised by its first allocation; copy bandwidth counts bytes read "
            "plus written, each of two buffers the larger of 1 GiB and 4x the last-level "
            "cache (within an eighth of the available memory), on the benchmark jobs' "
            "threads; read bandwidth: the sum of one such buffer (bytes read; the decode "
            "roofline's ceiling); every timing between device synchronisations; median of "
            "the runs; idle power from the energy counter over a pause once the device is "
            "up, before the measurements"
        ),
    }

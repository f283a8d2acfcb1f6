"""The compute device: choosing it, synchronising it, and reading its memory counters.

Every clock in this project is read after :func:`synchronize`, because CUDA and MPS run
asynchronously: a host clock read without a sync times the launch, not the work.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from localbench.engine.device_choice import DEVICE_REQUESTS, DeviceUnavailable

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
BYTES_PER_ELEMENT = {"bfloat16": 2, "float16": 2, "float32": 4}


def resolve_device(request: str) -> torch.device:
    """Turn ``auto|cuda|mps|cpu`` into a device that exists here, or raise DeviceUnavailable."""
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if request == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_ok:
            return torch.device("mps")
        return torch.device("cpu")
    if request == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("device: cuda was asked for, but torch sees no CUDA GPU here")
    if request == "mps" and not mps_ok:
        raise DeviceUnavailable("device: mps was asked for, but torch sees no Apple MPS device")
    if request not in DEVICE_REQUESTS:
        raise DeviceUnavailable(f"device: {request!r} is not one of auto, cuda, mps, cpu")
    return torch.device(request)


def use_threads(threads: int) -> int:
    """Run torch's CPU operators on ``threads`` threads in this process; returns the count
    torch then reports. Snakemake sets OMP_NUM_THREADS to the job's cores, which torch
    reads at import, so a job set to more threads than that says so here."""
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def last_level_cache_bytes(device: torch.device) -> int | None:
    """The largest cache in front of ``device``'s memory: the GPU's L2 on CUDA, else the
    CPU's last level (Linux sysfs; macOS sysctl); None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).L2_cache_size) or None
    if sys.platform == "darwin":
        for key in ("hw.l3cachesize", "hw.perflevel0.l2cachesize", "hw.l2cachesize"):
            completed = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True)
            if completed.returncode == 0 and completed.stdout.strip().isdigit():
                if int(completed.stdout) > 0:
                    return int(completed.stdout)
        return None
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        if text[:-1].isdigit() and text[-1] in units:
            sizes.append(int(text[:-1]) * units[text[-1]])
        elif text.isdigit():
            sizes.append(int(text))
    return max(sizes, default=None)


def cpu_has_fast_bfloat16() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), else float32 wins."""
    if sys.platform != "linux":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(request: str, device: torch.device) -> tuple[str, str]:
    """The dtype name to run in, and why it was chosen."""
    if request != "auto":
        return request, "set in config"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bfloat16", "auto: CUDA GPU with bfloat16 support"
        return "float16", "auto: CUDA GPU without bfloat16"
    if device.type == "mps":
        return "float16", "auto: Apple MPS runs float16 best"
    if cpu_has_fast_bfloat16():
        return "bfloat16", "auto: CPU with native bfloat16 (avx512_bf16/amx)"
    return "float32", "auto: CPU without native bfloat16"


def synchronize(device: torch.device) -> None:
    """Wait until all queued work on ``device`` is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def available_memory_bytes(device: torch.device) -> tuple[int, str]:
    """Memory a model may use on ``device`` now, and where the number comes from."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), "free CUDA memory (cudaMemGetInfo)"
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory()), "MPS recommended maximum working set"
    return int(psutil.virtual_memory().available), "available system memory (MemAvailable)"


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for the device's own memory counter."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_memory_bytes(device: torch.device) -> dict:
    """The device's own memory counters (CUDA peak since the last reset; MPS current)."""
    if device.type == "cuda":
        return {
            "device_peak_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
            "device_peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
        }
    if device.type == "mps":
        return {
            "device_allocated_bytes": int(torch.mps.current_allocated_memory()),
            "device_driver_allocated_bytes": int(torch.mps.driver_allocated_memory()),
        }
    return {}


def process_peak_rss_bytes() -> int:
    """Peak resident set size of this process over its whole life."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class RssSampler:
    """Samples this process's RSS in a thread, so a peak inside a time window is seen.

    ``ru_maxrss`` only knows the peak over the whole process life (loading included);
    the sampler gives the peak while the measured runs were going.
    """

    interval_s: float = 0.005
    peak_bytes: int = 0

    def __post_init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.peak_bytes = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)


def release_memory(device: torch.device) -> None:
    """Give cached device memory back, e.g. after an out-of-memory error."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()

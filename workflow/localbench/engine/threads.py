"""How a job's OpenMP runtime starts: its thread count and, on an accelerator, how idle
threads wait. Both are read once, when torch is imported, so a job sets them first.

- **Thread count.** Snakemake sets ``OMP_NUM_THREADS`` to a job's cores: 1 under
  ``--cores 1``, the way the benchmark runs one job at a time. A job then gives torch the
  config's ``threads`` (:func:`localbench.engine.device.use_threads`), and the runtime
  should start with that count, not Snakemake's 1.
- **Waiting, on CUDA and MPS.** OpenMP's threads spin for a while after each parallel
  region by default, which suits a CPU doing the model's work. In a job whose model runs
  on an accelerator the CPU only prepares inputs (Whisper's features, an image's pixels)
  and launches kernels. On a 16-core H200 machine, 16 spinning threads made the feature
  extraction of one 10 s clip take 128 ms instead of 5.6 ms with passive waiting, on two
  machines of three (docs/benchmarks/2026-12-03-cuda-h200-openmp-waiting.md). Such jobs
  start OpenMP with ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy.

The device a job runs on is known before torch is imported from its settings, or, for
``auto``, from the run's own resolution, which the Snakefile leaves in the environment
(``LOCALBENCH_DEVICE_TYPE``). Nothing here imports torch.
"""

from __future__ import annotations

import os

# Set by the Snakefile (rules/common.smk) to the device type ``device: auto`` resolves to.
DEVICE_TYPE_VARIABLE = "LOCALBENCH_DEVICE_TYPE"
ACCELERATORS = ("cuda", "mps")


def job_device_type(requested: str) -> str:
    """The device type a job's model runs on, without importing torch: ``requested``
    (``cuda|mps|cpu``), or for ``auto`` what the run resolved it to (cpu if unknown)."""
    if requested != "auto":
        return requested
    return os.environ.get(DEVICE_TYPE_VARIABLE, "cpu")


def start_openmp_with(threads: int, device: str = "cpu") -> int:
    """Start OpenMP with ``threads`` threads, passive waiting where the job's model runs
    on an accelerator (``device``: ``auto|cuda|mps|cpu``, see :func:`job_device_type`;
    unless ``OMP_WAIT_POLICY`` is set already): call before torch is imported. Returns
    ``threads``."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if job_device_type(device) in ACCELERATORS:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return threads


def openmp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as this process started its OpenMP runtime (None if unset)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else None


def openmp_wait_policy() -> str | None:
    """``OMP_WAIT_POLICY`` as this process started its OpenMP runtime (None if unset:
    the runtime's default, spinning a while, then sleeping)."""
    return os.environ.get("OMP_WAIT_POLICY") or None


def openmp_record() -> dict:
    """What a job's result or record says of its OpenMP runtime."""
    return {"openmp_threads": openmp_threads(), "openmp_wait_policy": openmp_wait_policy()}

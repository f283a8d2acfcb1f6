"""The hardware profile: what this machine is, as a JSON record and a short stable slug.

The slug names the results folder (``results/<profile>/``), so it must not change from
one run to the next on the same machine: it is built only from the accelerator, the chip
name and the memory size rounded to whole gigabytes.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil
import torch

from localbench.engine.device import last_level_cache_bytes, resolve_device
from localbench.results import RECORDED_PACKAGES

GIB = 1024**3
# The project's checkout: its git commit is recorded with every result.
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _first_line_of(command: list[str]) -> str | None:
    """The first line a command prints, or None if it is missing, fails or says nothing."""
    if not shutil.which(command[0]):
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def _cpu_name() -> str:
    if sys.platform == "darwin":
        brand = _first_line_of(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand:
            return brand
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _nvidia_driver() -> str | None:
    return _first_line_of(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def project_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The project's git commit, with ``-dirty`` when tracked files differ from it; None
    outside a git checkout or without git."""
    commit = _first_line_of(["git", "-C", str(root), "rev-parse", "HEAD"])
    if commit is None:
        return None
    try:
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return commit
    return f"{commit}-dirty" if status.returncode == 0 and status.stdout.strip() else commit


def software_record() -> dict:
    """The software a job runs with, read in that job: Python, the versions of
    :data:`RECORDED_PACKAGES` (None when not installed), torch's CUDA and the project's
    commit. hardware.json is written once per profile; this is current for every result."""
    return {
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in RECORDED_PACKAGES},
        "torch_cuda": torch.version.cuda,
        "commit": project_commit(),
    }


def slugify(text: str) -> str:
    """Lower-case words joined by dashes: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    text = re.sub(r"\b(cpu|processor|with radeon graphics|\d+-core)\b", " ", text)
    words = re.findall(r"[a-z0-9]+", text)
    return "-".join(words)[:48].strip("-") or "unknown"


def detect(device_request: str = "auto") -> dict:
    """Describe this machine and the software stack, for the device the run will use."""
    device = resolve_device(device_request)
    memory_bytes = psutil.virtual_memory().total
    record = {
        "accelerator": device.type,
        "cpu": _cpu_name(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "last_level_cache_bytes": last_level_cache_bytes(device),
        "memory_bytes": int(memory_bytes),
        "os": platform.system(),
        "os_release": platform.release(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "huggingface_hub": _version("huggingface-hub"),
        "snakemake": _version("snakemake"),
        "localbench": _version("localbench"),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.update(
            {
                "gpu": props.name,
                "gpu_count": torch.cuda.device_count(),
                "gpu_memory_bytes": int(props.total_memory),
                "gpu_multiprocessors": props.multi_processor_count,
                "cuda": torch.version.cuda,
                "nvidia_driver": _nvidia_driver(),
            }
        )
        record["chip"] = props.name
        record["accelerator_memory_bytes"] = int(props.total_memory)
    elif device.type == "mps":
        # Apple silicon shares one memory between CPU and GPU: the chip is the CPU brand.
        record["chip"] = record["cpu"]
        record["accelerator_memory_bytes"] = int(memory_bytes)
        record["mps_recommended_max_bytes"] = int(torch.mps.recommended_max_memory())
    else:
        record["chip"] = record["cpu"]
        record["accelerator_memory_bytes"] = int(memory_bytes)
    record["profile"] = profile_slug(record)
    return record


def profile_slug(record: dict) -> str:
    """``<accelerator>-<chip>-<memory>gb``, e.g. ``cuda-nvidia-h100-80gb-hbm3-80gb``."""
    memory_gb = round(record["accelerator_memory_bytes"] / GIB)
    chip = slugify(record["chip"])
    if record["accelerator"] == "cpu":
        chip = f"{chip}-{record['cpu_logical_cores']}c"
    return f"{record['accelerator']}-{chip}-{memory_gb}gb"

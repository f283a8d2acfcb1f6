"""This machine's hardware profile and resolved device, remembered between commands.

Every ``snakemake`` command names its results folder after the hardware profile and
resolves ``device: auto`` while it parses the workflow, and so does ``make report``
before it. Asking torch costs its import and CUDA's start in that process: about 1 s on
a laptop-class CPU, 4-5 s on an H200 machine, for every command, dry runs included.

The answer is kept in ``~/.cache/localbench/hardware/`` (``$XDG_CACHE_HOME`` respected),
keyed by what could change torch's answer: the device asked for, the host and its boot,
the Python and torch installations, the variables that hide or order GPUs, the NVIDIA
driver and its device nodes, the CPU count and memory, and this detection code itself.
Anything else different means asking torch again. The ``detect_hardware`` job asks torch
anyway, checks the profile the run was planned with (:func:`check_planned_profile`) and
writes its answer here. Errors are never kept, and a cache that cannot be written only
costs the time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

import psutil

from localbench.atomic import write_json
from localbench.engine.caches import cache_home

# Variables that change which GPUs torch sees, or in which order.
VISIBILITY_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "PYTORCH_NVML_BASED_CUDA_CHECK",
)
# The code whose answer is kept: a change to it is a new key.
DETECTION_CODE = (
    Path(__file__).with_name("hardware.py"),
    Path(__file__).parents[1] / "engine" / "device.py",
)


def _text(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _names(folder: str | Path, pattern: str = "*") -> list[str]:
    try:
        return sorted(entry.name for entry in Path(folder).glob(pattern))
    except OSError:
        return []


def _torch_installation() -> list | None:
    """Where torch is installed and when its version file was written, found without
    importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return None
    version_file = Path(spec.origin).with_name("version.py")
    try:
        written = version_file.stat().st_mtime_ns
    except OSError:
        written = None
    return [str(version_file.parent), written]


def machine_key(device_request: str) -> dict:
    """What torch's answer for ``device_request`` depends on, read without torch."""
    code = hashlib.sha256()
    for path in DETECTION_CODE:
        code.update((_text(path) or "").encode())
    return {
        "device": device_request,
        "host": socket.gethostname(),
        "boot": _text("/proc/sys/kernel/random/boot_id") or psutil.boot_time(),
        "python": [sys.executable, sys.version],
        "torch": _torch_installation(),
        "environment": {name: os.environ.get(name) for name in VISIBILITY_VARIABLES},
        "nvidia_driver": _text("/proc/driver/nvidia/version"),
        "nvidia_gpus": _names("/proc/driver/nvidia/gpus"),
        "device_nodes": _names("/dev", "nvidia*"),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "detection_code": code.hexdigest(),
    }


def _entry_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_home() / "hardware" / f"{digest[:32]}.json"


def remember(device_request: str, record: dict) -> None:
    """Keep the profile and device of ``record`` (a :func:`localbench.measure.hardware.detect`
    record made here for ``device_request``); a cache that cannot be written is skipped."""
    key = machine_key(device_request)
    entry = {
        "key": key,
        "detected": {"profile": record["profile"], "accelerator": record["accelerator"]},
    }
    try:
        write_json(_entry_path(key), entry)
    except OSError:
        pass


def detected(device_request: str) -> dict:
    """``{"profile": ..., "accelerator": ...}`` of this machine for ``device_request``:
    remembered, else asked of torch (and remembered). Raises
    :class:`~localbench.engine.device_choice.DeviceUnavailable` as torch's answer does."""
    key = machine_key(device_request)
    try:
        entry = json.loads(_entry_path(key).read_text(encoding="utf-8"))
        if entry["key"] == json.loads(json.dumps(key)):
            return dict(entry["detected"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from localbench.measure.hardware import detect  # imports torch

    record = detect(device_request)
    remember(device_request, record)
    return {"profile": record["profile"], "accelerator": record["accelerator"]}


def run_profile_name(slug: str, size: str) -> str:
    """The results folder's profile for a machine's ``slug``: ``-tiny`` appended for
    ``size: tiny``, so that smoke runs never mix with real results."""
    return f"{slug}-tiny" if size == "tiny" else slug


def check_planned_profile(record: dict, planned: str, configured: str | None, size: str) -> None:
    """Raise ValueError when ``record`` (detected in a job) names another machine than the
    profile ``planned`` when the workflow was parsed; a ``configured`` profile is the
    user's name and is not checked."""
    if configured:
        return
    expected = run_profile_name(record["profile"], size)
    if expected != planned:
        raise ValueError(
            f"this run was planned for hardware profile {planned!r}, but this job detects "
            f"{expected!r} (the machine changed while the run was parsed or since it was "
            "remembered); run the command again"
        )

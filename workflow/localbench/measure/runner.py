"""One model's benchmark, end to end: manifest -> preflight -> load -> measure -> result.

Whatever happens, a result is returned: measured, or skipped / failed / pending access /
not supported with the reason. One model's failure never costs the others their results.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from localbench import results
from localbench.engine import memory
from localbench.engine.device import (
    DTYPES,
    RssSampler,
    available_memory_bytes,
    device_memory_bytes,
    process_peak_rss_bytes,
    release_memory,
    reset_peak_memory,
    resolve_device,
    resolve_dtype,
    synchronize,
    use_threads,
)
from localbench.engine.threads import openmp_record
from localbench.measure.energy import measured_energy_observer
from localbench.measure.observers import Observers, RunObserver
from localbench.measure.progress import RunProgress
from localbench.measure.roofline import roofline_bandwidth
from localbench.measure.scenarios import SCENARIOS, throughput
from localbench.status import READY

METHOD = {
    "timer": "time.perf_counter, read only after synchronising the device (CUDA, MPS)",
    "warmup": "warm-up runs of the full request first, not counted",
    "statistics": "median, p90, mean, sample stdev and coefficient of variation over runs",
    "generation": "greedy, exactly new_tokens tokens per run (end of sequence suppressed)",
    "per_token_times": (
        "eager: a stopping criterion synchronises and stamps each new token; fast: see "
        "backend.timer (no synchronisation per token)"
    ),
    "ttft": "request start to first generated token (preprocessing, prefill, first step)",
    "decode_rate": "(tokens - 1) / (last token time - first token time): first token excluded",
    "memory": (
        "CUDA: peak allocated by torch's allocator during the measured runs; MPS: driver "
        "allocated after the runs; every device: peak process RSS sampled every 5 ms during "
        "the measured runs, and over the whole process life"
    ),
    "load": "from_pretrained of the safetensors checkpoint, moved to the device, synchronised",
    "energy": (
        "CUDA: NVML board energy; Linux CPU: RAPL packages and DRAM; read when the measured "
        "runs start, after each and at the end, never inside a run; per token and per "
        "request above the idle power the warm-up rule measured"
    ),
}


def _headline_memory(device: torch.device, counters: dict, rss_runs: int) -> int:
    if device.type == "cuda":
        return counters["device_peak_allocated_bytes"]
    if device.type == "mps":
        return counters["device_driver_allocated_bytes"]
    return rss_runs


def _measure(model, settings: dict, environment: dict, observer: RunObserver) -> dict:
    backend = settings.get("backend", "eager")
    if settings["task"] == "text-generation":
        bandwidth, _kind = roofline_bandwidth(environment.get("warmup"))
        if "throughput" in settings:
            return throughput.measure(
                model,
                settings["throughput"],
                backend=backend,
                bandwidth_gb_per_s=bandwidth,
                observer=observer,
            )
        return SCENARIOS["text-generation"](
            model, settings["benchmark"], backend=backend, bandwidth_gb_per_s=bandwidth,
            observer=observer,
        )  # fmt: skip
    return SCENARIOS[settings["task"]](
        model, settings["benchmark"], backend=backend, observer=observer
    )


def run_benchmark(
    settings: dict, manifest: dict, model_dir: Path, environment: dict, log=None
) -> dict:
    """Benchmark one model as ``settings`` say; never raises for model-level problems.
    Progress goes to ``log`` (one line per run) and, on a terminal, a bar."""
    if manifest.get("status") != READY:
        result = results.new_result(settings, manifest["status"], manifest.get("reason"))
        result["manifest"] = manifest
        result["environment"] = environment
        return result

    device = resolve_device(settings["device"])
    torch_threads = use_threads(settings["threads"])
    dtype_name, dtype_reason = resolve_dtype(settings["dtype"], device)
    available, source = available_memory_bytes(device)
    estimate = memory.estimate(
        manifest["parameters"], dtype_name, settings["memory_headroom_gb"], available, source
    )
    base = {
        "manifest": manifest,
        "environment": environment,
        "synthetic": bool(manifest.get("synthetic")),
        "device": str(device),
        "dtype": dtype_name,
        "dtype_reason": dtype_reason,
        "torch_threads": torch_threads,
        **openmp_record(),
        "parameters": manifest["parameters"],
        "size_on_disk_bytes": manifest.get("weights_bytes"),
        "memory_estimate": estimate.to_dict(),
        "method": METHOD,
    }
    if not estimate.fits:
        return {**results.new_result(settings, results.SKIPPED, estimate.reason()), **base}

    from localbench.engine.loading import load_model
    from localbench.fetch.acquire import ensure_intact

    # A weight file truncated or damaged since it was fetched is fetched again, not loaded.
    problems = ensure_intact(settings, manifest, model_dir)
    if problems:
        reason = "checkpoint damaged and not repaired: " + "; ".join(problems)
        return {**results.new_result(settings, results.FAILED, reason), **base}

    model = None
    try:
        torch.manual_seed(0)
        synchronize(device)
        start = time.perf_counter()
        model = load_model(model_dir, settings["task"], DTYPES[dtype_name], device)
        synchronize(device)
        load_s = time.perf_counter() - start

        backend = settings.get("backend", "eager")
        progress = RunProgress(f"{settings['name']} ({backend})", log)
        energy, energy_record = measured_energy_observer(
            device, (environment.get("warmup") or {}).get("energy")
        )
        reset_peak_memory(device)
        with RssSampler() as rss:
            with torch.inference_mode():
                measured = _measure(model, settings, environment, Observers(energy, progress))
        counters = device_memory_bytes(device)
        memory_record = {
            **counters,
            "process_peak_rss_during_runs_bytes": rss.peak_bytes,
            "process_peak_rss_lifetime_bytes": process_peak_rss_bytes(),
        }
        memory_record["peak_bytes"] = _headline_memory(device, counters, rss.peak_bytes)
        result = {**results.new_result(settings, results.MEASURED), **base}
        result["metrics"] = {"load_s": load_s, **measured.pop("metrics")}
        result["memory"] = memory_record
        result["energy"] = energy.record() if energy is not None else energy_record
        result.update(measured)
        return result
    except Exception as error:  # noqa: BLE001 - any model-level failure becomes a row
        reason = results.one_line(error)
        if memory.is_out_of_memory(error):
            # Recorded as such; the finally block frees the model and the device cache
            # before anything else runs in this process.
            reason = f"out of memory: {reason}"
        return {**results.new_result(settings, results.FAILED, reason), **base}
    finally:
        del model
        release_memory(device)

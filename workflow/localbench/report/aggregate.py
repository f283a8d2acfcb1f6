"""Gather result files into one pandas table: one row per model, one meaning per column.

Column names carry their unit. Every measured metric contributes its median, p90 and
coefficient of variation; nothing is recomputed differently from the result files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from localbench.atomic import read_json

IDENTITY_COLUMNS = [
    "model", "backend", "backend_used", "task", "repo", "revision", "status", "reason",
    "synthetic", "weights_source",
    "resolved_commit", "size", "device", "torch_threads", "dtype", "parameters",
    "size_on_disk_bytes",
    "peak_memory_bytes", "memory_estimate_bytes", "warmup_runs", "repetitions",
    "prompt_tokens", "image_tokens", "new_tokens", "load_s", "roofline_tokens_per_s",
    "decode_percent_of_roofline",
    "energy_status", "energy_reason", "energy_source", "average_watts", "idle_watts",
    "joules_per_token", "joules_per_request", "energy_per",
]  # fmt: skip


def flatten(result: dict) -> dict:
    """One result file as one flat table row."""
    manifest = result.get("manifest") or {}
    bench = (result.get("settings") or {}).get("benchmark") or {}
    estimate = result.get("memory_estimate") or manifest.get("memory_estimate") or {}
    backend = result.get("backend") or {}
    roofline = result.get("roofline") or {}
    energy = result.get("energy") or {}
    row = {
        "model": result["model"],
        "backend": result.get("backend_requested", "eager"),
        "backend_used": backend.get("used"),
        "task": result["task"],
        "repo": result["repo"],
        "revision": result["revision"],
        "status": result["status"],
        "reason": result.get("reason"),
        "synthetic": bool(result.get("synthetic", manifest.get("synthetic", False))),
        "weights_source": manifest.get("source"),
        "resolved_commit": manifest.get("resolved_commit"),
        "size": (result.get("settings") or {}).get("size"),
        "device": result.get("device"),
        "torch_threads": result.get("torch_threads"),
        "dtype": result.get("dtype"),
        "parameters": result.get("parameters", manifest.get("parameters")),
        "size_on_disk_bytes": result.get("size_on_disk_bytes", manifest.get("weights_bytes")),
        "peak_memory_bytes": (result.get("memory") or {}).get("peak_bytes"),
        "memory_estimate_bytes": estimate.get("needed_bytes"),
        "warmup_runs": bench.get("warmup_runs"),
        "repetitions": bench.get("repetitions"),
        # Where the prompt length is an outcome (image tokens after tiling), the
        # scenario's recorded input wins over the setting.
        "prompt_tokens": (result.get("inputs") or {}).get(
            "prompt_tokens", bench.get("prompt_tokens")
        ),
        "image_tokens": (result.get("inputs") or {}).get("image_tokens"),
        "new_tokens": bench.get("new_tokens"),
        "load_s": (result.get("metrics") or {}).get("load_s"),
        "roofline_tokens_per_s": roofline.get("tokens_per_s"),
        "decode_percent_of_roofline": roofline.get("decode_percent_of_roofline"),
        # Measured over the measured runs, or not available with the reason.
        "energy_status": energy.get("status"),
        "energy_reason": energy.get("reason"),
        "energy_source": energy.get("source"),
        "average_watts": energy.get("average_watts"),
        "idle_watts": energy.get("idle_watts"),
        "joules_per_token": energy.get("joules_per_token"),
        "joules_per_request": energy.get("joules_per_request"),
        # "above idle", or "total (idle unknown)".
        "energy_per": energy.get("per_token_and_request"),
    }
    for name, value in (result.get("metrics") or {}).items():
        if isinstance(value, dict) and "median" in value:
            row[f"{name}_median"] = value["median"]
            row[f"{name}_p90"] = value["p90"]
            row[f"{name}_cv"] = value["cv"]
    return row


def load_results(paths: Iterable[str | Path]) -> list[dict]:
    """Read result files in the given order."""
    return [read_json(path) for path in paths]


def results_table(results: list[dict]) -> pd.DataFrame:
    """The results as a DataFrame, identity columns first, metric columns sorted."""
    frame = pd.DataFrame([flatten(r) for r in results])
    if frame.empty:
        return pd.DataFrame(columns=IDENTITY_COLUMNS)
    metric_columns = sorted(c for c in frame.columns if c not in IDENTITY_COLUMNS)
    return frame[[c for c in IDENTITY_COLUMNS if c in frame.columns] + metric_columns]

"""Peer engines measured on the same machine, shown beside this project's results.

``benchmarks/llama_cpp_peer.py`` runs llama.cpp's own ``llama-bench`` over the same
checkpoint with the same threads, prompt length and new tokens, and writes a record to
``results/<profile>/peers/<engine>/<model>.json``. The summary lists those records in a
table of their own, each row labelled as a peer, beside this run's rows of the same model,
with the peer's roofline share (the measured read bandwidth over the GGUF file's bytes,
which a decode step reads once) and the ratios of our fast backend to the peer's row of
the same weight type. A record that cannot be read is left out with one line; it never
stops the summary.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from localbench.status import MEASURED

PEERS_FOLDER = "peers"
MAX_RECORD_BYTES = 2**20  # a record is a few kilobytes
# llama.cpp's weight types that hold the same values as ours (the others are quantized).
SAME_WEIGHTS = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def find_records(results_dir: str | os.PathLike) -> list[str]:
    """The peer records under ``results_dir/peers/<engine>/<model>.json``: regular files
    only, none through a symlink, names Snakemake takes as inputs."""
    root = Path(results_dir) / PEERS_FOLDER
    found = []
    try:
        engines = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return []
    for engine in engines:
        if not engine.is_dir(follow_symlinks=False):
            continue
        try:
            entries = sorted(os.scandir(engine.path), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            name = entry.path
            if (
                entry.name.endswith(".json")
                and entry.is_file(follow_symlinks=False)
                and not set("{}") & set(name)
                and name.isprintable()
            ):
                found.append(name)
    return found


def load_records(paths: list[str]) -> tuple[list[dict], list[str]]:
    """The readable records of ``paths``, and one line for each one left out."""
    records, skipped = [], []
    for path in paths:
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            if info.st_size > MAX_RECORD_BYTES:
                raise ValueError(f"{info.st_size} bytes, expected at most {MAX_RECORD_BYTES}")
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
                raise ValueError("expected a JSON object with a list of rows")
            if not all(isinstance(row, dict) for row in record["rows"]):
                raise ValueError("expected each row to be a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as error:
            skipped.append(f"{path}: {error}")
            continue
        records.append(record)
    return records, skipped


def _number(value) -> float | None:
    """A finite positive number, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < float("inf") else None


def _rate(row: dict, key: str) -> float | None:
    value = row.get(key)
    return _number(value.get("mean")) if isinstance(value, dict) else None


def peer_table(records: list[dict], rows: list[dict], bandwidth_gb_per_s: float | None):
    """Table rows, per model: ours (this run's measured rows) and then the peer's, with
    the roofline share and our fast backend's ratio to the peer's same-weight row."""
    table = []
    for record in records:
        model = str(record.get("model", "?"))
        engine = str(record.get("engine", "peer"))
        ours = [r for r in rows if r["name"] == model and r["measured"]]
        fast = next((r for r in ours if (r["backend_used"] or r["backend"]) == "fast"), None)
        for row in ours:
            table.append(
                {
                    "model": model,
                    "engine": f"localbench {row['backend_used'] or row['backend']}",
                    "peer": False,
                    "weights": row["dtype"],
                    "threads": row.get("threads"),
                    "decode": row["decode_median"],
                    "prompt": row.get("prefill_median"),
                    "percent": row["roofline_percent"],
                    "note": "this run",
                }
            )
        for peer_row in record["rows"]:
            weights = str(peer_row.get("weights", "?"))
            entry = {
                "model": model,
                "engine": f"{engine} (peer)",
                "peer": True,
                "weights": weights,
                "threads": _number(peer_row.get("n_threads") or record.get("threads")),
                "decode": _rate(peer_row, "decode_tokens_per_s"),
                "prompt": _rate(peer_row, "prompt_tokens_per_s"),
                "percent": None,
                "note": f"measured {record.get('measured_at', 'at an unrecorded time')}",
            }
            if peer_row.get("status") != MEASURED:
                entry["note"] = f"not measured: {peer_row.get('reason') or 'no reason recorded'}"
            size = _number(peer_row.get("file_bytes"))
            if entry["decode"] and size and bandwidth_gb_per_s:
                entry["percent"] = 100 * entry["decode"] / (bandwidth_gb_per_s * 1e9 / size)
            if fast and fast["dtype"] == SAME_WEIGHTS.get(weights) and entry["decode"]:
                entry["fast_decode_ratio"] = fast["decode_median"] / entry["decode"]
                if entry["prompt"] and fast.get("prefill_median"):
                    entry["fast_prompt_ratio"] = fast["prefill_median"] / entry["prompt"]
            table.append(entry)
    return table

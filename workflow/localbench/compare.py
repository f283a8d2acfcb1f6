"""Compare machines: one row per model, one column group per profile, ratios to a baseline.

Profiles come from current results (``results/<profile>/benchmarks.csv``), from archives
(``archive/<profile>/*.tar.gz``, the newest per profile, whoever made it) and from the
seed report's transcribed M4 figures. Each task has one speed metric; ratios are stated
so that above 1 means faster than the baseline.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from localbench.archive import read_archived_table
from localbench.summary import template_environment

SEED_PROFILE = "mps-apple-m4-seed-report"
# Per task: the speed column, its unit, and whether higher is better.
SPEED = {
    "text-generation": ("decode_tokens_per_s", "tokens/s", True),
    "image-captioning": ("latency_ms", "ms per image", False),
    "visual-question-answering": ("latency_ms", "ms per image", False),
    "multimodal": ("latency_ms", "ms per request", False),
    "speech-recognition": ("real_time_factor", "real-time factor", False),
}


def _profile_rows(table: pd.DataFrame, profile: str, source: str) -> list[dict]:
    rows = []
    for _, row in table.iterrows():
        if row.get("status") != "measured" or row["task"] not in SPEED:
            continue
        metric, _unit, _higher = SPEED[row["task"]]
        value = row.get(f"{metric}_median")
        memory = row.get("peak_memory_bytes")
        rows.append(
            {
                "profile": profile,
                "source": source,
                "model": row["model"],
                "backend": row.get("backend", "eager") or "eager",
                "task": row["task"],
                "speed": float(value) if pd.notna(value) else None,
                "memory_gb": float(memory) / 1e9 if pd.notna(memory) else None,
                "synthetic": str(row.get("synthetic")).lower() == "true",
                "bound": "",
                "note": "",
            }
        )
    return rows


def seed_rows(path: Path) -> list[dict]:
    """The transcribed seed report figures, compared through range midpoints."""
    lines = [
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    ]
    rows = []
    for record in csv.DictReader(lines):
        low = float(record["speed_low"]) if record["speed_low"] else None
        high = float(record["speed_high"]) if record["speed_high"] else None
        values = [v for v in (low, high) if v is not None]
        rows.append(
            {
                "profile": SEED_PROFILE,
                "source": f"transcribed: {path.name}",
                "model": record["model"],
                "backend": "eager",
                "task": record["task"],
                "speed": sum(values) / len(values) if values else None,
                "memory_gb": float(record["memory_gb"]) if record["memory_gb"] else None,
                "synthetic": False,
                # "<1s" or "RTF < 1": an upper bound, shown as such and never put in a ratio.
                "bound": "<" if low is None else "",
                "note": record["note"],
            }
        )
    return rows


def gather(tables: list[Path], archives: list[Path], seed: Path | None) -> list[dict]:
    """All comparable rows: current tables first, then the newest archive per other profile."""
    rows: list[dict] = []
    current = set()
    for path in tables:
        profile = path.parent.name
        current.add(profile)
        rows += _profile_rows(pd.read_csv(path), profile, f"results/{profile}")
    newest: dict[str, tuple[str, Path, bytes]] = {}
    for path in archives:
        fields, table = read_archived_table(path)
        profile = fields.get("profile") or path.parent.name
        if table is None or profile in current:
            continue
        created = fields.get("created_at", "")
        if profile not in newest or created > newest[profile][0]:
            newest[profile] = (created, path, table)
    for profile, (_created, path, table) in sorted(newest.items()):
        rows += _profile_rows(pd.read_csv(io.BytesIO(table)), profile, f"archive: {path.name}")
    if seed is not None:
        rows += seed_rows(seed)
    return rows


def comparison_context(rows: list[dict], baseline: str | None) -> dict:
    """Profiles, sources and one line per (model, backend) with values and ratios."""
    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    if not baseline or baseline not in profiles:
        baseline = profiles[0] if profiles else None
    by_key: dict[tuple[str, str], dict[str, dict]] = {}
    for row in rows:
        by_key.setdefault((row["model"], row["backend"]), {})[row["profile"]] = row
    lines = []
    for (model, backend), cells in by_key.items():
        task = next(iter(cells.values()))["task"]
        _metric, unit, higher = SPEED[task]
        base = cells.get(baseline)
        entries = []
        for profile in profiles:
            cell = cells.get(profile)
            ratio = None
            comparable = cell and base and not cell["bound"] and not base["bound"]
            if comparable and cell["speed"] and base["speed"]:
                ratio = cell["speed"] / base["speed"] if higher else base["speed"] / cell["speed"]
            entries.append({"cell": cell, "ratio": ratio})
        lines.append(
            {"model": model, "backend": backend, "task": task, "unit": unit, "entries": entries}
        )
    sources = {r["profile"]: r["source"] for r in rows}
    return {"profiles": profiles, "baseline": baseline, "lines": lines, "sources": sources}


def number(value: float | None) -> str:
    """A figure with as many digits as it deserves: 1234, 12.3, 0.0123."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render_comparison(context: dict) -> str:
    """Render COMPARISON.md."""
    environment = template_environment()
    environment.filters["number"] = number
    return environment.get_template("comparison.md.j2").render(**context)

"""Compare machines: one row per model, one column group per profile, ratios to a baseline.

Profiles come from current results (``results/<profile>/benchmarks.csv``), from archives
(``archive/<profile>/*.tar.gz``, the newest per profile folder, whoever made it) and from
the seed report's transcribed M4 figures. A table or archive that cannot be compared is
left out with its reason (``skipped``); the others are compared as usual. Each task has
one speed metric; ratios are stated so that above 1 means faster than the baseline.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

from localbench.archive_reader import (
    TABLE_MEMBER,
    ArchivedTable,
    ArchiveRefused,
    SkippedArchive,
    read_archive,
    read_bounded,
    shown,
)
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
TABLE_COLUMNS = ("model", "task", "status")
# A profile's table has one row per model and backend; far more is not a results table.
MAX_TABLE_ROWS = 10_000

log = logging.getLogger(__name__)


class BadTable(ValueError):
    """A benchmarks.csv that cannot be compared, with the one reason why."""


def table_number(text: str | None, column: str, line: int) -> float | None:
    """A figure of the table: empty is missing; anything but a finite number >= 0 is
    refused, naming the line and column."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadTable(f"line {line}: {column} {shown(text)} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise BadTable(f"line {line}: {column} {shown(text)} is not a finite figure >= 0")
    return value


def profile_rows(data: bytes, profile: str, source: str) -> list[dict]:
    """The comparable rows of a benchmarks.csv given as bytes: strict UTF-8, the
    identity columns present, every figure used a finite number (:class:`BadTable`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadTable(
            f"not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        missing = [c for c in TABLE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BadTable(f"no column {', '.join(missing)}")
        for record in reader:
            if reader.line_num > MAX_TABLE_ROWS:
                raise BadTable(f"more than {MAX_TABLE_ROWS} lines")
            if record.get("status") != "measured" or record.get("task") not in SPEED:
                continue
            if not record.get("model") or None in record:
                raise BadTable(f"line {reader.line_num}: no model, or more cells than columns")
            metric, _unit, _higher = SPEED[record["task"]]
            column = f"{metric}_median"
            speed = table_number(record.get(column), column, reader.line_num)
            memory = table_number(
                record.get("peak_memory_bytes"), "peak_memory_bytes", reader.line_num
            )
            # Tables written before threads were recorded have no such column: unknown.
            threads = table_number(record.get("torch_threads"), "torch_threads", reader.line_num)
            rows.append(
                {
                    "profile": profile,
                    "source": source,
                    "model": record["model"],
                    "backend": record.get("backend") or "eager",
                    "task": record["task"],
                    "speed": speed,
                    "memory_gb": memory / 1e9 if memory is not None else None,
                    "synthetic": (record.get("synthetic") or "").lower() == "true",
                    "threads": int(threads) if threads is not None else None,
                    "bound": "",
                    "note": "",
                }
            )
    except csv.Error as error:
        raise BadTable(f"line {reader.line_num}: {error}") from None
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
                "threads": None,
                # "<1s" or "RTF < 1": an upper bound, shown as such and never put in a ratio.
                "bound": "<" if low is None else "",
                "note": record["note"],
            }
        )
    return rows


def archived_rows(path: Path) -> tuple[ArchivedTable, list[dict]]:
    """One archive read and its table's comparable rows; :class:`ArchiveRefused` with the
    one reason when either cannot be used."""
    archived = read_archive(path)
    if archived.profile == SEED_PROFILE:
        raise ArchiveRefused("its folder has the name of the seed report's profile")
    try:
        rows = profile_rows(archived.table, archived.profile, f"archive: {path.name}")
    except BadTable as refusal:
        raise ArchiveRefused(f"{TABLE_MEMBER}: {refusal}") from None
    return archived, rows


def skip_reason(error: Exception, path: Path) -> str:
    """Why ``path`` is left out, in one line: a refusal's own words; for a failure nobody
    foresaw, its type and message (the traceback goes to the log)."""
    if isinstance(error, ArchiveRefused | BadTable):
        return str(error)
    log.error("%s could not be read", path, exc_info=error)
    return f"could not be read ({type(error).__name__}: {shown(str(error))})"


def gather(
    tables: list[Path], archives: list[Path], seed: Path | None
) -> tuple[list[dict], list[SkippedArchive]]:
    """All comparable rows, current tables first, then the newest archive of every other
    profile, then the seed report; and every table or archive left out, with why.

    Each table and archive is read on its own: whatever is wrong with one (unreadable,
    hostile, bad figures, a failure nobody foresaw) leaves it out with one reason and
    costs the others nothing.
    """
    rows: list[dict] = []
    skipped: list[SkippedArchive] = []
    current = set()
    for path in tables:
        profile = path.parent.name
        try:
            rows += profile_rows(read_bounded(path), profile, f"results/{profile}")
        except Exception as error:  # this table's failure alone
            skipped.append(SkippedArchive(str(path), skip_reason(error, path)))
        else:
            current.add(profile)
    newest: dict[str, tuple[ArchivedTable, list[dict]]] = {}
    for path in archives:
        try:
            archived, profile_table = archived_rows(path)
        except Exception as error:  # this archive's failure alone
            skipped.append(SkippedArchive(str(path), skip_reason(error, path)))
            continue
        if archived.profile in current:
            continue  # this machine's current results win over any archive of them
        known = newest.get(archived.profile)
        if known is None or archived.created_at > known[0].created_at:
            newest[archived.profile] = (archived, profile_table)
    for _profile, (_archived, profile_table) in sorted(newest.items()):
        rows += profile_table
    if seed is not None:
        rows += seed_rows(seed)
    return rows, skipped


def comparison_context(
    rows: list[dict], baseline: str | None, skipped: list[SkippedArchive] = ()
) -> dict:
    """Profiles, sources and one line per (model, backend) with values and ratios; the
    archives and tables left out, by path."""
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
    threads = {
        profile: sorted({r["threads"] for r in rows if r["profile"] == profile and r["threads"]})
        for profile in profiles
    }
    recorded = {tuple(counts) for counts in threads.values() if counts}
    return {
        "profiles": profiles,
        "threads": threads,
        # CPU figures measured on different thread counts are not like for like.
        "threads_differ": len(recorded) > 1,
        "baseline": baseline,
        "lines": lines,
        "sources": sources,
        "skipped": sorted(skipped, key=lambda s: s.path),
    }


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

"""Compare machines, and one machine with its own past.

Across machines: one row per model, one column group per profile, ratios to a baseline.
Profiles come from current results (``results/<profile>/benchmarks.csv``), from archives
(``archive/<profile>/*.tar.gz``, the newest per profile folder, whoever made it) and from
the seed report's transcribed M4 figures. Each task has one speed metric; ratios are
stated so that above 1 means faster than the baseline.

On one machine (:func:`machine_histories`): a profile's current results against its own
earlier archives, each model and backend against its newest earlier measurement, tested
on the raw samples (:mod:`localbench.report.regression`), with what changed between the runs.

A table, archive or result file that cannot be compared is left out with its reason
(``skipped``); the others are compared as usual.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from pathlib import Path

from localbench.report.archive_reader import (
    TABLE_MEMBER,
    ArchivedTable,
    ArchiveRefused,
    SkippedArchive,
    read_archive,
    read_bounded,
    shown,
)
from localbench.report.regression import (
    ALPHA,
    MIN_RELATIVE_CHANGE,
    NO_EARLIER,
    NOT_TESTED_SAMPLES,
    REGRESSION,
    TESTED_METRICS,
    BadResult,
    ComparedResult,
    compare_samples,
    differences,
    median,
    min_runs_each,
    parse_result,
)
from localbench.report.summary import template_environment
from localbench.status import MEASURED

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
# Per task: the energy column compared (joules per generated token for text, per request
# otherwise) and its unit; tables written before energy was measured have none.
ENERGY = {
    "text-generation": ("joules_per_token", "J/token"),
    "image-captioning": ("joules_per_request", "J/image"),
    "visual-question-answering": ("joules_per_request", "J/image"),
    "multimodal": ("joules_per_request", "J/request"),
    "speech-recognition": ("joules_per_request", "J/request"),
}
# The names a current table may use to point at its result files
# (results/<profile>/benchmarks/<model>/<backend>.json): the workflow's own patterns.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
BACKENDS = ("eager", "fast")
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
            if record.get("status") != MEASURED or record.get("task") not in SPEED:
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
            energy_column, _energy_unit = ENERGY[record["task"]]
            energy = table_number(record.get(energy_column), energy_column, reader.line_num)
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
                    "energy": energy,
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
                "energy": None,
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
    if isinstance(error, ArchiveRefused | BadTable | BadResult):
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


def _current_results(table: Path, skipped: list[SkippedArchive]) -> list[ComparedResult]:
    """The measured results a current table lists, read from their result files; a file
    that cannot be used is added to ``skipped`` with the key at fault."""
    profile = table.parent.name
    try:
        rows = profile_rows(read_bounded(table), profile, f"results/{profile}")
    except Exception:  # noqa: BLE001 - gather() has listed this table with its reason
        return []
    found = []
    for row in rows:
        if not MODEL_NAME.fullmatch(row["model"]) or row["backend"] not in BACKENDS:
            continue  # not a name the workflow writes: no path is made of it
        path = table.parent / "benchmarks" / row["model"] / f"{row['backend']}.json"
        try:
            result = parse_result(read_bounded(path), str(path))
        except Exception as error:  # this result's failure alone
            skipped.append(SkippedArchive(str(path), skip_reason(error, path)))
            continue
        if result is not None:
            found.append(result)
    return found


def _archived_results(
    profile: str, archives: list[Path], left_out: set[str], skipped: list[SkippedArchive]
) -> tuple[int, dict[tuple[str, str], list[ComparedResult]]]:
    """How many of ``profile``'s archives were read, and their measured results by
    (model, backend), oldest measurement first, each measurement once (the same run
    archived twice counts once)."""
    by_key: dict[tuple[str, str], dict[object, ComparedResult]] = {}
    read = 0
    for path in archives:
        if path.parent.name != profile or str(path) in left_out:
            continue
        try:
            archived = read_archive(path, with_results=True)
        except Exception as error:  # this archive's failure alone
            skipped.append(SkippedArchive(str(path), f"result files: {skip_reason(error, path)}"))
            continue
        read += 1
        for name, data in sorted(archived.results.items()):
            source = f"{path}: {name}"
            try:
                result = parse_result(data, source)
            except Exception as error:  # this result's failure alone
                skipped.append(SkippedArchive(source, skip_reason(error, path)))
                continue
            if result is not None:
                runs = by_key.setdefault((result.model, result.backend), {})
                runs.setdefault(result.finished_at, result)
    ordered = {
        key: sorted(runs.values(), key=lambda r: r.finished_at) for key, runs in by_key.items()
    }
    return read, ordered


def _against_earlier(now: ComparedResult, earlier: list[ComparedResult]) -> dict:
    """One model and backend now against its newest earlier measurement: a test per
    metric, the earlier medians oldest first, and what changed between the two runs."""
    before = [r for r in earlier if r.finished_at < now.finished_at]
    pair = {
        "model": now.model,
        "backend": now.backend,
        "now_finished_at": now.finished_at.isoformat(timespec="seconds"),
        "baseline": None,
        "metrics": [],
        "changes": [],
    }
    if not before:
        pair["verdict"] = NO_EARLIER
        return pair
    baseline = before[-1]
    pair["baseline"] = baseline.source
    pair["baseline_finished_at"] = baseline.finished_at.isoformat(timespec="seconds")
    pair["changes"] = differences(baseline.setup, now.setup)
    for metric, words, higher in TESTED_METRICS[now.task]:
        old, new = baseline.samples.get(metric), now.samples.get(metric)
        pair["metrics"].append(
            {
                "metric": metric,
                "words": words,
                "test": compare_samples(old, new, higher) if old and new else None,
                "verdict": NOT_TESTED_SAMPLES if not (old and new) else None,
                "earlier_medians": [
                    median(r.samples[metric]) for r in before if metric in r.samples
                ],
            }
        )
    return pair


def machine_histories(
    tables: list[Path], archives: list[Path], skipped: list[SkippedArchive] = ()
) -> tuple[list[dict], list[SkippedArchive]]:
    """For every profile with current results: each measured model and backend against
    its newest earlier measurement in the profile's own archives, and every result file
    left out, with why. ``skipped`` are the tables and archives :func:`gather` left out
    (already listed, not read again)."""
    left_out = {entry.path for entry in skipped}
    problems: list[SkippedArchive] = []
    histories = []
    for table in tables:
        if str(table) in left_out:
            continue
        profile = table.parent.name
        current = _current_results(table, problems)
        read, earlier = _archived_results(profile, archives, left_out, problems)
        pairs = [
            _against_earlier(now, earlier.get((now.model, now.backend), [])) for now in current
        ]
        histories.append({"profile": profile, "archives": read, "pairs": pairs})
    return histories, problems


def regressions(histories: list[dict]) -> list[str]:
    """``profile model (backend) metric`` for every change flagged as a regression."""
    return [
        f"{history['profile']} {pair['model']} ({pair['backend']}) {line['words']}"
        for history in histories
        for pair in history["pairs"]
        for line in pair["metrics"]
        if line["test"] is not None and line["test"].verdict == REGRESSION
    ]


def comparison_context(
    rows: list[dict],
    baseline: str | None,
    skipped: list[SkippedArchive] = (),
    histories: list[dict] = (),
) -> dict:
    """Profiles, sources and one line per (model, backend) with values and ratios; each
    current profile against its own earlier archives; the archives, tables and result
    files left out, by path."""
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
            {
                "model": model,
                "backend": backend,
                "task": task,
                "unit": unit,
                "energy_unit": ENERGY[task][1],
                "entries": entries,
            }
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
        "histories": list(histories),
        "alpha": ALPHA,
        "min_change_percent": 100 * MIN_RELATIVE_CHANGE,
        "min_runs": min_runs_each(ALPHA),
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


def p_value(value: float | None) -> str:
    """A p-value as read in a table: ``0.0043``, ``< 0.0001``; ``n/a`` when not tested."""
    if value is None:
        return "n/a"
    return "< 0.0001" if value < 1e-4 else f"{value:.2g}"


def render_comparison(context: dict) -> str:
    """Render COMPARISON.md."""
    environment = template_environment()
    environment.filters["number"] = number
    environment.filters["p_value"] = p_value
    return environment.get_template("comparison.md.j2").render(**context)

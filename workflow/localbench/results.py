"""The result record: one JSON file per model, the single source of truth.

Every table, chart and comparison is derived from these files. A model that was not
measured still gets a result, whose status says why (never a row of made-up numbers).
"""

from __future__ import annotations

import datetime as dt
import traceback

# The status words are defined in localbench.status; a result uses these, and the
# modules that read results take them from here too.
from localbench.status import (
    FAILED,
    MEASURED,
    NOT_AVAILABLE,
    PENDING_ACCESS,
    SKIPPED,
    UNSUPPORTED,
)
from localbench.status import LABELS as STATUS_LABELS
from localbench.status import RESULT_STATUSES as STATUSES

__all__ = [
    "FAILED",
    "MEASURED",
    "NOT_AVAILABLE",
    "RECORDED_PACKAGES",
    "SCHEMA_VERSION",
    "PENDING_ACCESS",
    "SKIPPED",
    "STATUSES",
    "STATUS_LABELS",
    "UNSUPPORTED",
    "new_result",
    "now_utc",
    "one_line",
]

SCHEMA_VERSION = 1
# The packages whose versions every result records (``environment.software``), so that a
# comparison of two runs can name what changed between them.
RECORDED_PACKAGES = (
    "torch", "transformers", "huggingface-hub", "tokenizers", "safetensors", "numpy",
    "triton", "snakemake",
)  # fmt: skip


def now_utc() -> str:
    """The current time as an ISO 8601 UTC string."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and first message line, plus where it was raised."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {message}{where}"[:500]


def new_result(settings: dict, status: str, reason: str | None = None) -> dict:
    """A result skeleton for ``settings`` with ``status``; metrics are added when measured."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return {
        "schema_version": SCHEMA_VERSION,
        "model": settings["name"],
        "backend_requested": settings.get("backend", "eager"),
        "task": settings["task"],
        "repo": settings["repo"],
        "revision": settings["revision"],
        "settings": settings,
        "status": status,
        "reason": reason,
        "finished_at": now_utc(),
    }

"""Snakemake's directory lock, left behind by a run that was killed (SIGKILL, power loss).

Snakemake writes ``.snakemake/locks/*.lock`` when a run starts and deletes them when it
ends; a run killed outright cannot delete them, and every later run then stops with
"Directory cannot be locked" until someone runs ``snakemake --unlock``. The lock files
name no process, so a lock is judged stale here when no process working in this folder
is Snakemake or one of its jobs (their command lines name snakemake, and job scripts run
from ``.snakemake/scripts``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil


def _ancestors() -> set[int]:
    pids = {os.getpid()}
    process = psutil.Process()
    while (process := process.parent()) is not None:
        pids.add(process.pid)
    return pids


def other_runs(folder: Path) -> list[int]:
    """Process ids of Snakemake runs or jobs working in ``folder``, this run excluded."""
    folder = folder.resolve()
    mine = _ancestors()
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        info = process.info
        if info["pid"] in mine or not info["cwd"] or not info["cmdline"]:
            continue
        try:
            if Path(info["cwd"]).resolve() != folder:
                continue
        except OSError:
            continue
        if any("snakemake" in part for part in info["cmdline"]):
            found.append(info["pid"])
    return found


def clear_stale_locks(folder: Path) -> bool:
    """Remove ``folder``'s Snakemake locks when no other run holds them; True if removed."""
    locks = folder / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()) or other_runs(folder):
        return False
    shutil.rmtree(locks, ignore_errors=True)
    return True

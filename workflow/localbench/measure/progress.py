"""Progress of a long job: on the terminal a tqdm bar, in the job's log one line per run
or file. Updated between runs only (as a :class:`~localbench.measure.observers.RunObserver`), so
nothing is ever printed inside a timed region.

The terminal is the job's real stderr (``sys.__stderr__``: ``logs.job_log`` sends
``sys.stderr`` to the log file); the bar is drawn only when it is a terminal, so output
captured to a file gets no carriage-return noise. The log gets plain lines.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

from localbench.measure.observers import RunObserver

if TYPE_CHECKING:
    from localbench.engine.generation import Run


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _bar(label: str, total: int, unit: str, terminal: TextIO | None) -> tqdm | None:
    if terminal is None or not getattr(terminal, "isatty", lambda: False)():
        return None
    return tqdm(total=total, desc=label, unit=unit, file=terminal, leave=True, dynamic_ncols=True)


class RunProgress(RunObserver):
    """``<model> (<backend>): run i of n`` with the speed so far (median decode rate of
    the measured runs, else their median latency)."""

    def __init__(
        self, label: str, log: logging.Logger | None, terminal: TextIO | None = sys.__stderr__
    ) -> None:
        self.label = label
        self.log = log or logging.getLogger("localbench")
        self.terminal = terminal
        self.bar: tqdm | None = None
        self.warmup_runs = self.repetitions = 0
        self.decode: list[float] = []
        self.latency_ms: list[float] = []

    def runs_started(self, warmup_runs: int, repetitions: int) -> None:
        self.warmup_runs, self.repetitions = warmup_runs, repetitions
        self.decode, self.latency_ms = [], []
        self.bar = _bar(self.label, warmup_runs + repetitions, "run", self.terminal)

    def run_finished(self, run: Run, index: int, measured: bool) -> None:
        this = f"{run.latency_s * 1e3:.0f} ms"
        if run.tokens >= 2:
            this = f"{run.decode_tokens_per_s:.2f} tokens/s, {this}"
        if measured:
            self.latency_ms.append(run.latency_s * 1e3)
            if run.tokens >= 2:
                self.decode.append(run.decode_tokens_per_s)
            so_far = self.speed_so_far()
            line = f"run {index + 1} of {self.repetitions}: {this}; median so far {so_far}"
        else:
            line = f"warm-up run {index + 1} of {self.warmup_runs}: {this}"
        self.log.info("%s: %s", self.label, line)
        if self.bar is not None:
            phase = "measured" if measured else "warm-up"
            postfix = f"{phase}, {self.speed_so_far() if measured else this}"
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(1)

    def speed_so_far(self) -> str:
        if self.decode:
            return f"{_median(self.decode):.2f} tokens/s"
        return f"{_median(self.latency_ms):.0f} ms" if self.latency_ms else "n/a"

    def measured_finished(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class FileProgress:
    """``<pipeline>/<stage> batch <id>: file i of n`` with files per second so far."""

    def __init__(
        self,
        label: str,
        total: int,
        log: logging.Logger | None,
        terminal: TextIO | None = sys.__stderr__,
    ) -> None:
        self.label = label
        self.total = total
        self.log = log or logging.getLogger("localbench")
        self.done = 0
        self.start = time.perf_counter()
        self.bar = _bar(label, total, "file", terminal) if total else None

    def files_done(self, names: list[str], status: str, seconds: float | None = None) -> None:
        """``names`` finished (one file, or a group decoded together) with ``status``."""
        if not names:
            return
        self.done += len(names)
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        took = f", {seconds:.2f} s" if seconds is not None else ""
        shown = names[0] if len(names) == 1 else f"{len(names)} files"
        self.log.info(
            "%s: file %d of %d %s (%s%s); %.2f files/s so far",
            self.label, self.done, self.total, status, shown, took, rate,
        )  # fmt: skip
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate:.2f} files/s", refresh=False)
            self.bar.update(len(names))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

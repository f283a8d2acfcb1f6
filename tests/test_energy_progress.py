"""Energy counters (RAPL over a constructed powercap tree, with wraparound; not available
with its reason where nothing can be read) and progress lines between runs."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import torch
from localbench.engine.generation import Run
from localbench.measure.energy import (
    EnergyObserver,
    EnergyUnavailable,
    RaplCounter,
    energy_counter,
    idle_power,
    rapl_domains,
    warmup_energy,
)
from localbench.measure.observers import Observers
from localbench.measure.progress import FileProgress, RunProgress
from localbench.measure.timing import repeat
from localbench.results import MEASURED, NOT_AVAILABLE

MAX_RANGE_UJ = 262_143_328_850  # a real package counter's range


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = MAX_RANGE_UJ) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "name").write_text(label + "\n")
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return folder


def set_energy(folder: Path, energy_uj: int) -> None:
    (folder / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path) -> dict[str, Path]:
    """A powercap tree as Linux shows it on a one-socket machine: the package, its core,
    uncore and DRAM parts, and the platform (psys) domain."""
    root = tmp_path / "powercap"
    (root / "intel-rapl").mkdir(parents=True)  # the control type: no counter
    return {
        "root": root,
        "package": zone(root, "intel-rapl:0", "package-0", 5_000_000),
        "core": zone(root, "intel-rapl:0:0", "core", 4_000_000),
        "dram": zone(root, "intel-rapl:0:1", "dram", 1_000_000, max_uj=65_712_999_613),
        "psys": zone(root, "intel-rapl:1", "psys", 9_000_000),
    }


def test_rapl_adds_the_packages_and_their_dram_and_nothing_twice(powercap):
    counter = RaplCounter(powercap["root"])
    assert [d.name for d in counter.domains] == ["package-0", "0-dram"]
    assert counter.domain == "CPU package-0, 0-dram (RAPL)"
    before = counter.read()
    set_energy(powercap["package"], 7_500_000)
    set_energy(powercap["core"], 6_000_000)  # inside the package's count
    set_energy(powercap["psys"], 20_000_000)  # the whole platform, overlapping
    set_energy(powercap["dram"], 1_250_000)
    assert counter.joules_between(before, counter.read()) == pytest.approx(2.5 + 0.25)


def test_rapl_counts_across_a_wraparound(powercap):
    set_energy(powercap["package"], MAX_RANGE_UJ - 1_000_000)
    counter = RaplCounter(powercap["root"])
    before = counter.read()
    set_energy(powercap["package"], 2_000_000)  # wrapped past max_energy_range_uj
    assert counter.joules_between(before, counter.read()) == pytest.approx(3.0)


def test_energy_over_measured_runs_is_read_between_runs(powercap):
    """Each counter read lands between runs; the per-token figure is above idle."""
    counter = RaplCounter(powercap["root"])
    reads = []
    real_read = counter.read
    counter.read = lambda: reads.append("read") or real_read()
    observer = EnergyObserver(counter, {"status": MEASURED, "source": "rapl", "idle_watts": 0.0})
    energy_uj = [5_000_000]

    def once() -> Run:
        reads.append("run")
        energy_uj[0] += 10_000_000  # 10 J per run, spent inside the run
        set_energy(powercap["package"], energy_uj[0])
        return Run(0.0, 0.1, 0.9, 1.0, 32, [0.025] * 31)

    repeat(once, warmup_runs=1, repetitions=3, observer=observer)
    record = observer.record()
    assert reads == ["run", "read", "run", "read", "run", "read", "run", "read", "read"]
    assert record["joules"] == pytest.approx(30.0)  # the warm-up's 10 J not counted
    assert record["tokens"] == 96 and record["requests"] == 3
    assert record["joules_per_token"] == pytest.approx(30.0 / 96)
    assert record["joules_per_request"] == pytest.approx(10.0)
    assert record["per_token_and_request"] == "above idle"
    # Idle measured on another counter is not subtracted.
    other = EnergyObserver(counter, {"status": MEASURED, "source": "nvml", "idle_watts": 50.0})
    assert other.idle_watts is None


def test_idle_power_reads_the_counter_over_a_pause(powercap):
    record = idle_power(RaplCounter(powercap["root"]), seconds=0.01)
    assert record["status"] == MEASURED and record["source"] == "rapl"
    assert record["idle_watts"] == 0.0  # nothing changed the fake counters


def test_no_powercap_is_not_available_with_the_reason(tmp_path):
    with pytest.raises(EnergyUnavailable, match="no readable .*powercap"):
        rapl_domains(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EnergyUnavailable, match=r"no RAPL package domain"):
        RaplCounter(empty)
    (empty / "intel-rapl:0").mkdir()
    (empty / "intel-rapl:0" / "energy_uj").write_text("garbage\n")
    (empty / "intel-rapl:0" / "max_energy_range_uj").write_text("100\n")
    with pytest.raises(EnergyUnavailable, match=r"energy_uj: 'garbage' is not a counter"):
        RaplCounter(empty)


def test_energy_on_this_machine_is_measured_or_says_why_not():
    """This project's VM has no /sys/class/powercap: energy is not available, and the
    record says why; a machine with readable RAPL gets an idle power."""
    try:
        energy_counter(torch.device("cpu"))
    except EnergyUnavailable as reason:
        expected = str(reason)
    else:
        expected = None
    record = warmup_energy(torch.device("cpu"))
    if expected is None:
        assert record["status"] == MEASURED and record["idle_watts"] >= 0
    else:
        assert record == {"status": NOT_AVAILABLE, "reason": expected}
        assert "powercap" in expected or "root" in expected


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_log_line_per_run_and_a_bar_on_a_terminal(caplog):
    terminal = Terminal()
    progress = RunProgress("tiny-llm (eager)", logging.getLogger("test"), terminal)
    lines_during_runs = []

    def once() -> Run:
        lines_during_runs.append(len(caplog.records))
        return Run(0.0, 0.1, 0.9, 1.0, 5, [0.2] * 4)

    with caplog.at_level(logging.INFO):
        repeat(once, warmup_runs=1, repetitions=3, observer=Observers(None, progress))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "tiny-llm (eager): warm-up run 1 of 1: 5.00 tokens/s, 1000 ms",
        "tiny-llm (eager): run 1 of 3: 5.00 tokens/s, 1000 ms; median so far 5.00 tokens/s",
        "tiny-llm (eager): run 2 of 3: 5.00 tokens/s, 1000 ms; median so far 5.00 tokens/s",
        "tiny-llm (eager): run 3 of 3: 5.00 tokens/s, 1000 ms; median so far 5.00 tokens/s",
    ]
    assert lines_during_runs == [0, 1, 2, 3]  # each line written after its run ended
    shown = terminal.getvalue()
    assert "tiny-llm (eager)" in shown and "4/4" in shown and "5.00 tokens/s" in shown
    # Not a terminal: no bar, no carriage returns anywhere.
    plain = io.StringIO()
    quiet = RunProgress("tiny-llm (eager)", logging.getLogger("test"), plain)
    repeat(once, warmup_runs=0, repetitions=2, observer=quiet)
    assert plain.getvalue() == ""


def test_file_progress_counts_files_done_of_the_total(caplog):
    progress = FileProgress("voice-notes/transcribe batch 0", 3, logging.getLogger("test"), None)
    with caplog.at_level(logging.INFO):
        progress.files_done(["a.wav"], "done", 1.5)
        progress.files_done([], "failed")
        progress.files_done(["b.txt", "c.txt"], "decoded", 2.0)
        progress.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith(
        "voice-notes/transcribe batch 0: file 1 of 3 done (a.wav, 1.50 s)"
    )
    assert messages[1].startswith("voice-notes/transcribe batch 0: file 3 of 3 decoded (2 files")

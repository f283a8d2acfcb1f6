"""A profile's current results against its own earlier archives: the change test on raw
samples, what changed between the runs, and the comparison that puts them together."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pytest
from localbench.measure.stats import Measurement
from localbench.report.aggregate import results_table
from localbench.report.archive import create_archive
from localbench.report.archive_reader import MAX_READ_BYTES, MAX_READ_TOTAL_BYTES, find_archives
from localbench.report.compare import (
    comparison_context,
    gather,
    machine_histories,
    regressions,
    render_comparison,
)
from localbench.report.regression import (
    ALPHA,
    IMPROVEMENT,
    NO_CHANGE,
    NO_EARLIER,
    NOT_TESTED_N,
    REGRESSION,
    BadResult,
    compare_samples,
    differences,
    min_runs_each,
    parse_result,
    setup,
    smallest_p_value,
)

# The run-to-run spread measured on this project's CPU machine: Qwen2.5 decode at about
# 5 tokens/s with a coefficient of variation of 1-3% within one run.
DECODE = 5.0
CV = 0.02


def runs(rng: random.Random, centre: float, count: int, cv: float = CV) -> list[float]:
    return [rng.gauss(centre, cv * centre) for _ in range(count)]


def test_a_real_20_percent_slowdown_is_flagged_every_time():
    rng = random.Random(1)
    for _ in range(50):
        test = compare_samples(runs(rng, DECODE, 5), runs(rng, 0.8 * DECODE, 5), True)
        assert test.verdict == REGRESSION
        assert test.p_value < ALPHA
        assert test.relative_change == pytest.approx(-0.2, abs=0.05)
        assert test.cliffs_delta == -1.0  # every run now slower than every run before
        assert test.faster is False


def test_a_20_percent_longer_latency_is_a_regression_and_shorter_an_improvement():
    rng = random.Random(2)
    before = runs(rng, 900.0, 8)
    assert compare_samples(before, runs(rng, 1080.0, 8), False).verdict == REGRESSION
    assert compare_samples(before, runs(rng, 720.0, 8), False).verdict == IMPROVEMENT


def test_noise_of_the_measured_spread_is_not_flagged():
    rng = random.Random(3)
    verdicts = [
        compare_samples(runs(rng, DECODE, 10), runs(rng, DECODE, 10), True).verdict
        for _ in range(200)
    ]
    # Two runs of one distribution: the test alone is wrong 1% of the time at p < 0.01,
    # and the 2% minimum change cuts that further.
    assert verdicts.count(NO_CHANGE) >= 198
    assert set(verdicts) <= {NO_CHANGE, REGRESSION, IMPROVEMENT}


def test_a_significant_change_below_the_minimum_is_not_flagged():
    rng = random.Random(4)
    test = compare_samples(runs(rng, DECODE, 20, 0.001), runs(rng, 1.01 * DECODE, 20, 0.001), True)
    assert test.p_value < ALPHA  # real, but 1% is below the 2% that counts
    assert test.verdict == NO_CHANGE


def test_too_few_runs_are_not_tested_even_for_a_large_change():
    test = compare_samples([5.0, 5.1, 4.9], [4.0, 4.1, 3.9], True)
    assert test.verdict == NOT_TESTED_N and test.p_value is None
    assert test.relative_change == pytest.approx(-0.2)
    assert min_runs_each() == 5
    assert smallest_p_value(5, 5) < ALPHA <= smallest_p_value(4, 4)


def test_equal_samples_are_no_change():
    assert compare_samples([5.0] * 6, [5.0] * 6, True).verdict == NO_CHANGE


def result_record(
    decode: list[float],
    finished_at: str,
    torch: str = "2.13.0",
    dtype: str = "float32",
    commit: str = "aaaa",
    model: str = "tiny-llm",
) -> dict:
    metrics = {
        "decode_tokens_per_s": Measurement.from_values(decode, "tokens/s").to_dict(),
        "ttft_ms": Measurement.from_values([100.0 + i for i in range(len(decode))], "ms").to_dict(),
        "load_s": 0.5,
    }
    return {
        "model": model,
        "backend_requested": "eager",
        "task": "text-generation",
        "repo": "example/tiny-llm",
        "revision": "main",
        "status": "measured",
        "reason": None,
        "finished_at": finished_at,
        "settings": {"benchmark": {"repetitions": len(decode), "new_tokens": 32}},
        "device": "cpu",
        "dtype": dtype,
        "torch_threads": 2,
        "backend": {"used": "eager"},
        "metrics": metrics,
        "memory": {"peak_bytes": 10**8},
        "environment": {
            "hardware": {"torch": "2.10.0", "python": "3.11.7"},
            "software": {
                "python": "3.11.7",
                "packages": {"torch": torch, "transformers": "5.24.0"},
                "commit": commit,
            },
        },
    }


def test_the_comparison_names_what_changed_between_two_runs():
    before = result_record([5.0] * 5, "2026-12-01T10:00:00+00:00", torch="2.12.0", commit="aaaa")
    after = result_record([5.0] * 5, "2026-12-02T10:00:00+00:00", dtype="bfloat16", commit="bbbb")
    changed = differences(setup(before), setup(after))
    assert ("torch", "2.12.0", "2.13.0") in changed
    assert ("project commit", "aaaa", "bbbb") in changed
    assert ("dtype", "float32", "bfloat16") in changed
    labels = [label for label, _, _ in changed]
    assert "transformers" not in labels and "threads" not in labels  # the same on both sides
    # A result written before versions were recorded per job: hardware.json's, and what
    # only one side records is named as such.
    legacy = result_record([5.0] * 5, "2026-11-30T10:00:00+00:00")
    del legacy["environment"]["software"]
    changed = differences(setup(legacy), setup(after))
    assert ("torch", "2.10.0", "2.13.0") in changed
    assert ("project commit", "not recorded", "bbbb") in changed


def test_a_bad_result_record_is_refused_naming_the_key():
    record = result_record([5.0, -1.0, 5.0, 5.0, 5.0], "2026-12-01T10:00:00+00:00")
    with pytest.raises(BadResult, match=r"metrics\.decode_tokens_per_s\.values: '-1\.0'"):
        parse_result(json.dumps(record).encode(), "x")
    record = result_record([5.0] * 5, "yesterday")
    with pytest.raises(BadResult, match="finished_at: 'yesterday'"):
        parse_result(json.dumps(record).encode(), "x")
    with pytest.raises(BadResult, match="not JSON"):
        parse_result(b"[" * 100_000, "x")
    assert parse_result(json.dumps({**record, "status": "failed"}).encode(), "x") is None


def write_results(folder: Path, records: list[dict]) -> None:
    """A profile's results folder as the workflow leaves it: result files and the CSV."""
    for record in records:
        path = folder / "benchmarks" / record["model"] / "eager.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    (folder / "settings").mkdir(exist_ok=True)
    (folder / "settings" / "x.json").write_text("{}")
    results_table(records).to_csv(folder / "benchmarks.csv", index=False)


def test_current_results_are_set_against_the_newest_earlier_archive(tmp_path, monkeypatch):
    rng = random.Random(5)
    monkeypatch.chdir(tmp_path)
    results = Path("results") / "this-machine"
    oldest = result_record(runs(rng, DECODE, 6), "2026-11-30T10:00:00+00:00", torch="2.11.0")
    steady_before = result_record(
        runs(rng, 50.0, 6), "2026-11-30T10:00:00+00:00", model="steady-llm"
    )
    earlier = result_record(runs(rng, DECODE, 6), "2026-12-01T10:00:00+00:00", torch="2.12.0")
    for stamp, records in (("2026-11-30", [oldest, steady_before]), ("2026-12-01", [earlier])):
        write_results(results, records)
        create_archive(
            results, [], Path("archive"), "this-machine", measured=1, results=1,
            now=dt.datetime.fromisoformat(f"{stamp}T12:00:00+00:00"),
        )  # fmt: skip
    now = result_record(runs(rng, 0.8 * DECODE, 6), "2026-12-02T10:00:00+00:00")
    steady_now = result_record(runs(rng, 50.0, 6), "2026-12-02T10:00:00+00:00", model="steady-llm")
    write_results(results, [now, steady_now])
    # The current results archived as they are: the same runs, never compared to themselves.
    create_archive(results, [], Path("archive"), "this-machine", measured=2, results=2)

    archives, refused = find_archives(Path("archive"))
    tables = [results / "benchmarks.csv"]
    rows, skipped = gather(tables, archives, None)
    histories, left_out = machine_histories(tables, archives, refused + skipped)
    assert left_out == []
    [history] = histories
    assert history["profile"] == "this-machine" and history["archives"] == 3
    pairs = {pair["model"]: pair for pair in history["pairs"]}
    slower = pairs["tiny-llm"]
    assert slower["baseline"].endswith("results/benchmarks/tiny-llm/eager.json")
    assert "20261201T120000Z" in slower["baseline"]  # the newest earlier, not the oldest
    decode = slower["metrics"][0]
    assert decode["test"].verdict == REGRESSION
    assert len(decode["earlier_medians"]) == 2  # both earlier runs, oldest first
    assert ("torch", "2.12.0", "2.13.0") in slower["changes"]
    steady = pairs["steady-llm"]
    assert "20261130T120000Z" in steady["baseline"]
    assert steady["metrics"][0]["test"].verdict == NO_CHANGE
    assert regressions(histories) == ["this-machine tiny-llm (eager) decode tokens/s"]

    comparison = render_comparison(comparison_context(rows, None, skipped, histories))
    section = comparison.split("## Changes on one machine", 1)[1]
    assert "### this-machine" in section
    line = next(row for row in section.splitlines() if row.startswith("| tiny-llm | eager |"))
    assert "**regression**" in line and "(slower)" in line
    assert "torch 2.12.0 → 2.13.0" in section


def test_a_profile_without_earlier_archives_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = Path("results") / "new-machine"
    write_results(results, [result_record([5.0] * 3, "2026-12-02T10:00:00+00:00")])
    tables = [results / "benchmarks.csv"]
    histories, _ = machine_histories(tables, [], [])
    comparison = render_comparison(
        comparison_context(gather(tables, [], None)[0], None, [], histories)
    )
    assert "No earlier archive of this profile" in comparison
    # An archive of these very results holds no earlier measurement.
    create_archive(results, [], Path("archive"), "new-machine", measured=1, results=1)
    histories, _ = machine_histories(tables, find_archives(Path("archive"))[0], [])
    assert histories[0]["pairs"][0]["verdict"] == NO_EARLIER


def test_a_bad_result_file_in_an_archive_is_listed_and_the_others_compared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = Path("results") / "this-machine"
    bad = result_record([5.0] * 6, "2026-12-01T10:00:00+00:00")
    bad["metrics"]["decode_tokens_per_s"]["values"] = "fast"
    write_results(results, [bad])
    create_archive(results, [], Path("archive"), "this-machine", measured=1, results=1)
    write_results(results, [result_record([5.0] * 6, "2026-12-02T10:00:00+00:00")])
    tables = [results / "benchmarks.csv"]
    histories, left_out = machine_histories(tables, find_archives(Path("archive"))[0], [])
    [entry] = left_out
    assert entry.path.endswith(": results/benchmarks/tiny-llm/eager.json")
    assert "metrics.decode_tokens_per_s.values" in entry.reason
    assert histories[0]["pairs"][0]["verdict"] == NO_EARLIER


def test_result_files_read_from_one_archive_are_bounded_in_all(tmp_path, monkeypatch):
    """Each result member under the per-member bound, together over the archive's: the
    archive's result files are refused with that reason, its table still compared."""
    monkeypatch.chdir(tmp_path)
    results = Path("results") / "this-machine"
    write_results(results, [result_record([5.0] * 6, "2026-12-01T10:00:00+00:00")])
    padding = " " * (MAX_READ_BYTES - 20_000)
    for index in range(MAX_READ_TOTAL_BYTES // MAX_READ_BYTES + 1):
        record = result_record([5.0] * 6, "2026-12-01T10:00:00+00:00", model=f"m{index}")
        path = results / "benchmarks" / f"m{index}" / "eager.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record) + padding)
    create_archive(results, [], Path("archive"), "this-machine", measured=1, results=1)
    write_results(results, [result_record([5.0] * 6, "2026-12-02T10:00:00+00:00")])
    tables = [results / "benchmarks.csv"]
    archives = find_archives(Path("archive"))[0]
    rows, skipped = gather(tables, archives, None)
    assert skipped == []
    histories, left_out = machine_histories(tables, archives, skipped)
    [entry] = left_out
    assert entry.reason.startswith("result files: the members read take more than 64 MiB")
    assert histories[0]["archives"] == 0


def test_energy_reaches_the_table_and_the_comparison(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(7)
    measured = result_record(runs(rng, DECODE, 6), "2026-12-02T10:00:00+00:00")
    measured["energy"] = {
        "status": "measured", "source": "nvml", "average_watts": 400.0, "idle_watts": 120.0,
        "joules_per_token": 0.0095, "joules_per_request": 1.2,
        "per_token_and_request": "above idle",
    }  # fmt: skip
    unavailable = result_record(runs(rng, DECODE, 6), "2026-12-02T10:00:00+00:00", model="cpu-llm")
    unavailable["energy"] = {
        "status": "not available",
        "reason": "no readable /sys/class/powercap",
    }
    table = results_table([measured, unavailable])
    rows = table.set_index("model")
    assert rows.loc["tiny-llm", "joules_per_token"] == pytest.approx(0.0095)
    assert rows.loc["cpu-llm", "energy_status"] == "not available"
    assert rows.loc["cpu-llm", "energy_reason"] == "no readable /sys/class/powercap"

    results = Path("results") / "gpu-machine"
    write_results(results, [measured, unavailable])
    rows, skipped = gather([results / "benchmarks.csv"], [], None)
    comparison = render_comparison(comparison_context(rows, None, skipped))
    line = next(row for row in comparison.splitlines() if row.startswith("| tiny-llm |"))
    assert "0.0095 J/token" in line
    line = next(row for row in comparison.splitlines() if row.startswith("| cpu-llm |"))
    assert line.rstrip(" |").endswith("n/a")

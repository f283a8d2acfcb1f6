"""Archives never overwrite and hold no secrets; compare lists every profile."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TWO_JOBS, snakemake

TOKEN = "hf_thisIsAFakeTokenThatMustNeverBeWritten"
# The second profile measures more runs than the shipped 3: enough for compare's test to
# reach p < 0.01 against an earlier archive.
SECOND_REPETITIONS = 6
SECOND_MODELS = ("qwen2.5-1.5b-instruct", "whisper-base")


def config_models() -> list[str]:
    """The models of the shipped config.yaml."""
    return list(yaml.safe_load((ROOT / "config.yaml").read_text())["models"])


@pytest.fixture(scope="module")
def two_profile_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run plus a second profile measured on the same models, once."""
    workdir = tmp_path_factory.mktemp("two-profiles") / "run"
    shutil.copytree(tiny_run.parent.parent, workdir, symlinks=True)
    overlay = workdir / "more-runs.yaml"
    # Only the two models the tests compare, and one throughput point: a second profile
    # need not measure every model again to be archived and compared.
    others = [name for name in config_models() if name not in SECOND_MODELS]
    overlay.write_text(
        f"benchmark_defaults:\n  repetitions: {SECOND_REPETITIONS}\nmodels:\n"
        + "".join(f"  {name}:\n    enabled: false\n" for name in others)
        + "  qwen2.5-1.5b-instruct:\n    throughput:\n      batch_sizes: [1]\n"
    )
    snakemake(
        workdir, *TWO_JOBS, "report", "--configfile", str(workdir / "config.yaml"), str(overlay),
        "--config", "size=tiny", "weights=synthetic", "profile=second-machine",
    )  # fmt: skip
    return workdir


def rewrite_archive(source: Path, target: Path, change: Callable[[str, bytes], bytes]) -> None:
    """A copy of the archive ``source`` at ``target``, each file member's bytes passed
    through ``change(name, data)``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source) as old, tarfile.open(target, "w:gz") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read() if member.isfile() else None
            if data is not None:
                data = change(member.name, data)
                member.size = len(data)
            new.addfile(member, io.BytesIO(data) if data is not None else None)


def earlier_run(name: str, data: bytes, slower_model: str | None) -> bytes:
    """A member of an archive as an earlier run would have left it: finished a year
    before, with torch 2.12.0 and another commit; ``slower_model``'s eager decode runs
    were three times as fast then as the fastest run now (so now is a regression)."""
    if name == "ARCHIVE.txt":
        lines = data.decode().splitlines()
        lines = [
            "created_at: 2025-01-01T00:00:00+00:00" if line.startswith("created_at:") else line
            for line in lines
        ]
        return ("\n".join(lines) + "\n").encode()
    if not (name.startswith("results/benchmarks/") and name.endswith(".json")):
        return data
    record = json.loads(data)
    record["finished_at"] = "2025-01-01T00:00:00+00:00"
    software = record["environment"]["software"]
    software["packages"]["torch"] = "2.12.0"
    software["commit"] = "0123456789abcdef0123456789abcdef01234567"
    decode = record["metrics"].get("decode_tokens_per_s")
    if record["model"] == slower_model and record["backend_requested"] == "eager" and decode:
        top = max(decode["values"])
        decode["values"] = [3 * top + 0.01 * i for i in range(len(decode["values"]))]
    return json.dumps(record).encode()


@pytest.fixture
def two_profiles(two_profile_run, tmp_path) -> Path:
    """A private copy of the two-profile run: the tests below archive and compare in it."""
    workdir = tmp_path / "run"
    shutil.copytree(two_profile_run, workdir, symlinks=True)
    return workdir


def test_two_profiles_coexist(two_profiles):
    for profile in ("test-machine", "second-machine"):
        assert (two_profiles / "results" / profile / "SUMMARY.md").exists()


def test_archive_twice_gives_two_archives_without_the_token(two_profiles, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    args = ("--cores", "1", "archive", "--config", "size=tiny", "weights=synthetic")
    snakemake(two_profiles, *args, "profile=test-machine")
    snakemake(two_profiles, *args, "profile=test-machine")
    archives = sorted((two_profiles / "archive" / "test-machine").glob("*.tar.gz"))
    assert len(archives) == 2
    with open(two_profiles / "archive" / "index.csv", newline="") as handle:
        index = list(csv.DictReader(handle))
    assert [row["path"] for row in index] == [f"test-machine/{a.name}" for a in archives]
    for archive in archives:
        with tarfile.open(archive) as opened:
            names = opened.getnames()
            assert "results/benchmarks.csv" in names and "results/hardware.json" in names
            assert any(n.startswith("results/settings/") for n in names)
            assert any(n.startswith("models/") and n.endswith("manifest.json") for n in names)
            for member in opened.getmembers():
                if member.isfile():
                    assert TOKEN.encode() not in opened.extractfile(member).read(), member.name


def test_compare_lists_current_profiles_archives_and_the_seed_report(two_profiles):
    # An archive made on another machine, dropped into archive/, is picked up. (With the
    # second profile's own settings: other settings would measure it again first.)
    snakemake(
        two_profiles, "--cores", "1", "archive",
        "--configfile", str(two_profiles / "config.yaml"), str(two_profiles / "more-runs.yaml"),
        "--config", "size=tiny", "weights=synthetic", "profile=second-machine",
    )  # fmt: skip
    source = next((two_profiles / "archive" / "second-machine").glob("*.tar.gz"))
    rewrite_archive(
        source,
        two_profiles / "archive" / "other-machine" / "x.tar.gz",
        lambda name, data: (
            data.replace(b"second-machine", b"other-machine") if name == "ARCHIVE.txt" else data
        ),
    )
    # Earlier runs of both current profiles: the second one's (6 runs) with one model
    # slower now; the first one's from 3 runs, too few to test.
    rewrite_archive(
        source,
        two_profiles / "archive" / "second-machine" / "20250101T000000Z-earlier.tar.gz",
        lambda name, data: earlier_run(name, data, "qwen2.5-1.5b-instruct"),
    )
    snakemake(
        two_profiles, "--cores", "1", "archive",
        "--config", "size=tiny", "weights=synthetic", "profile=test-machine",
    )  # fmt: skip
    [made] = (two_profiles / "archive" / "test-machine").glob("*.tar.gz")
    earlier = made.with_name("20250101T000000Z-earlier.tar.gz")
    rewrite_archive(made, earlier, lambda name, data: earlier_run(name, data, None))
    made.unlink()
    completed = snakemake(
        two_profiles, "--cores", "1", "compare",
        "--config", "size=tiny", "weights=synthetic", "profile=test-machine",
        "compare_baseline=test-machine",
    )  # fmt: skip
    comparison = (two_profiles / "results" / "COMPARISON.md").read_text()
    for profile in ("test-machine", "second-machine", "other-machine", "mps-apple-m4-seed-report"):
        assert f"\n| {profile} | " in comparison, profile
    assert "Baseline: test-machine." in comparison
    assert "Skipped archives" not in comparison
    row = next(line for line in comparison.splitlines() if line.startswith("| whisper-base |"))
    assert "1.00x" in row  # the baseline against itself
    # The cross-machine chart beside it, linked from the Markdown, embedded in the page.
    chart = two_profiles / "results" / "comparison.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    assert "](comparison.png)" in comparison
    page = (two_profiles / "results" / "COMPARISON.html").read_text()
    assert "data:image/png;base64," in page

    # Each current profile against its own earlier run.
    history = comparison.split("## Changes on one machine", 1)[1]
    second = history.split("### second-machine", 1)[1].split("###", 1)[0]
    slower = next(line for line in second.splitlines() if line.startswith(
        "| qwen2.5-1.5b-instruct | eager | decode tokens/s |"
    ))  # fmt: skip
    assert "**regression**" in slower and "(slower)" in slower
    assert f"({SECOND_REPETITIONS}) |" in slower  # runs on each side
    steady = next(line for line in second.splitlines() if line.startswith(
        "| whisper-base | eager | real-time factor |"
    ))  # fmt: skip
    assert steady.endswith("| no significant change |")
    assert "torch 2.12.0 → " in second and "project commit 0123456789abcdef" in second
    assert "20250101T000000Z-earlier.tar.gz" in second
    first = history.split("### test-machine", 1)[1].split("###", 1)[0]
    rows = [line for line in first.splitlines() if line.startswith("| qwen2.5-1.5b-instruct |")]
    assert rows and all(line.endswith("| not tested (n too small) |") for line in rows)
    assert "regression(s)" in completed.stderr
    assert "second-machine qwen2.5-1.5b-instruct (eager) decode tokens/s" in completed.stderr
    assert "Skipped archives" not in comparison

"""Archives never overwrite and hold no secrets; compare lists every profile."""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import TWO_JOBS, snakemake

TOKEN = "hf_thisIsAFakeTokenThatMustNeverBeWritten"


@pytest.fixture(scope="module")
def two_profile_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run plus a second profile measured on the same models, once."""
    workdir = tmp_path_factory.mktemp("two-profiles") / "run"
    shutil.copytree(tiny_run.parent.parent, workdir, symlinks=True)
    snakemake(
        workdir, *TWO_JOBS, "report",
        "--config", "size=tiny", "weights=synthetic", "profile=second-machine",
    )  # fmt: skip
    return workdir


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
    # An archive made on another machine, dropped into archive/, is picked up.
    snakemake(
        two_profiles, "--cores", "1", "archive",
        "--config", "size=tiny", "weights=synthetic", "profile=second-machine",
    )  # fmt: skip
    foreign = two_profiles / "archive" / "other-machine"
    foreign.mkdir()
    source = next((two_profiles / "archive" / "second-machine").glob("*.tar.gz"))
    with tarfile.open(source) as old, tarfile.open(foreign / "x.tar.gz", "w:gz") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read() if member.isfile() else None
            if member.name == "ARCHIVE.txt":
                data = data.replace(b"second-machine", b"other-machine")
                member.size = len(data)
            new.addfile(member, io.BytesIO(data) if data is not None else None)
    snakemake(
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

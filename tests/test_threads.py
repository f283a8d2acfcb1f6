"""CPU threads reach torch inside the jobs, and the copy bandwidth streams from memory."""

from __future__ import annotations

import json
import os
import re
import shutil

import psutil
import pytest
from conftest import TINY, snakemake
from localbench.config import resolve_threads
from localbench.engine import threads as openmp
from localbench.measure.warmup import copy_buffer_bytes
from localbench.report.compare import comparison_context, profile_rows, render_comparison
from media_files import picture

MiB = 1 << 20
GiB = 1 << 30


@pytest.mark.parametrize(
    ("cache", "available", "expected"),
    [
        (32 * MiB, 24 * GiB, GiB),  # a small cache: the 1 GiB floor
        (480 * MiB, 24 * GiB, 4 * 480 * MiB),  # a large cache: four times it
        (None, 24 * GiB, GiB),  # cache unknown: the floor
        (GiB, 8 * GiB, GiB),  # four times the cache would take more than a quarter
        (32 * MiB, 256 * MiB, 64 * MiB),  # a starved machine still measures something
    ],
)
def test_copy_buffer_is_several_caches_within_a_quarter_of_memory(cache, available, expected):
    assert copy_buffer_bytes(cache, available) == expected


def test_auto_threads_are_the_physical_cores():
    assert resolve_threads("auto") == (psutil.cpu_count(logical=False) or 1)
    assert resolve_threads(3) == 3


def test_openmp_waits_passively_only_where_an_accelerator_does_the_work(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv(openmp.DEVICE_TYPE_VARIABLE, raising=False)
    assert openmp.job_device_type("auto") == "cpu"  # outside a run: nothing resolved
    monkeypatch.setenv(openmp.DEVICE_TYPE_VARIABLE, "cuda")
    assert openmp.job_device_type("auto") == "cuda"
    assert openmp.job_device_type("cpu") == "cpu"  # a model set to the CPU stays there

    assert openmp.start_openmp_with(3, "cpu") == 3
    assert os.environ["OMP_NUM_THREADS"] == "3" and openmp.openmp_wait_policy() is None
    openmp.start_openmp_with(16, "cuda")
    assert openmp.openmp_threads() == 16 and openmp.openmp_wait_policy() == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stands
    openmp.start_openmp_with(16, "mps")
    assert openmp.openmp_wait_policy() == "ACTIVE"
    with pytest.raises(ValueError, match="at least 1"):
        openmp.start_openmp_with(0, "cpu")


def test_the_configured_threads_reach_torch_in_the_jobs(tiny_run, tmp_path):
    """auto in the session's tiny run; then 3 threads with --cores 1, where Snakemake
    sets OMP_NUM_THREADS=1 for the job, and the job still runs torch (and starts its
    OpenMP runtime) on 3."""
    auto = resolve_threads("auto")
    result = json.loads(
        (tiny_run / "benchmarks" / "qwen2.5-1.5b-instruct" / "fast.json").read_text()
    )
    warmup = json.loads((tiny_run / "warmup.json").read_text())
    assert result["torch_threads"] == auto == warmup["torch_threads"]
    assert warmup["copy_buffer_bytes"] > (warmup["last_level_cache_bytes"] or 0)
    summary = (tiny_run / "SUMMARY.md").read_text()
    assert f"benchmarks on {auto} thread" in summary

    workdir = tmp_path / "run"
    shutil.copytree(tiny_run.parent.parent, workdir, symlinks=True)
    target = "results/test-machine/benchmarks/whisper-base/eager.json"
    snakemake(workdir, "--cores", "1", target, *TINY, "threads=3")
    rerun = json.loads((workdir / target).read_text())
    assert rerun["status"] == "measured"
    assert rerun["torch_threads"] == 3
    warmup = json.loads((workdir / "results/test-machine/warmup.json").read_text())
    assert warmup["torch_threads"] == 3
    # OpenMP started with the same count, not Snakemake's 1 for a one-core job.
    assert rerun["openmp_threads"] == 3 == warmup["openmp_threads"]
    # On the CPU, OpenMP's threads wait as the runtime does by default (or as set).
    user_policy = os.environ.get("OMP_WAIT_POLICY")
    assert rerun["openmp_wait_policy"] == user_policy == warmup["openmp_wait_policy"]


def claimed_threads(dry_run_output: str) -> dict[str, set[int]]:
    """The threads each rule's jobs claim, as a dry run lists them (1 when not shown)."""
    claims: dict[str, set[int]] = {}
    for block in re.split(r"^(?:local)?rule ", dry_run_output, flags=re.MULTILINE)[1:]:
        found = re.search(r"^\s+threads: (\d+)$", block, flags=re.MULTILINE)
        claims.setdefault(block.split(":", 1)[0], set()).add(int(found[1]) if found else 1)
    return claims


def test_measuring_jobs_claim_every_core_and_batches_the_configured_threads(workdir):
    """Nothing runs beside the warm-up or a benchmark: each claims every core the run is
    given. A pipeline batch claims the config's threads. (The tests' own runs lift these
    claims with --max-threads 1, conftest.TWO_JOBS; this is where they are checked.)"""
    images = workdir / "inputs" / "images"
    images.mkdir(parents=True)
    picture().save(images / "photo.png")
    completed = snakemake(workdir, "-n", "--cores", "4", "report", "pipelines", *TINY, "threads=3")
    claims = claimed_threads(completed.stdout + completed.stderr)
    assert claims["warm_up_device"] == claims["benchmark_model"] == {4}
    assert claims["fetch_model"] == claims["detect_hardware"] == {1}
    batches = {rule: claim for rule, claim in claims.items() if rule.startswith("run_")}
    assert batches and set().union(*batches.values()) == {3}, batches


def table(threads: str | None) -> bytes:
    header = "model,backend,task,status,decode_tokens_per_s_median,peak_memory_bytes"
    row = "qwen,eager,text-generation,measured,4.5,3700000000"
    if threads is not None:
        header, row = header + ",torch_threads", row + f",{threads}"
    return f"{header}\n{row}\n".encode()


@pytest.mark.parametrize(
    ("left", "right", "differ", "shown"),
    [
        ("2", "1", True, ["| 2 |", "| 1 |"]),
        ("2", "2", False, ["| 2 |"]),
        ("2", None, False, ["| 2 |", "| not recorded |"]),
    ],
)
def test_a_comparison_names_the_threads_of_each_profile(left, right, differ, shown):
    rows = profile_rows(table(left), "laptop", "current") + profile_rows(
        table(right), "desktop", "archive"
    )
    text = render_comparison(comparison_context(rows, None))
    assert ("different numbers of CPU threads" in text) is differ
    for cell in shown:
        assert cell in text

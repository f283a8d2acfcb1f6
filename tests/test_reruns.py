"""Rerun only what changed: dry runs after config edits plan exactly the affected jobs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import TINY, snakemake


@pytest.fixture
def finished_run(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny run (outputs, models and metadata)."""
    source = tiny_run.parent.parent
    target = tmp_path / "run"
    shutil.copytree(source, target, symlinks=True)
    return target


def planned_jobs(workdir: Path) -> dict[str, int]:
    """Job counts of a dry run of the report target."""
    completed = snakemake(workdir, "-n", "report", *TINY)
    text = completed.stdout + completed.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:")[1].split("\n\n")[0]
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE)
        if match.group(1) != "total"
    }


def edit_config(workdir: Path, change) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_reordered_keys_comments_and_touch_rerun_nothing(finished_run):
    path = finished_run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    reordered = {key: config[key] for key in reversed(list(config))}
    reordered["models"] = {
        name: dict(reversed(list(model.items())))
        for name, model in reversed(list(config["models"].items()))
    }
    path.write_text("# a new comment\n" + yaml.safe_dump(reordered, sort_keys=False))
    assert planned_jobs(finished_run) == {}


def test_one_models_benchmark_setting_reruns_only_that_model(finished_run):
    edit_config(
        finished_run, lambda c: c["models"]["blip-base"].update(benchmark={"new_tokens": 8})
    )
    assert planned_jobs(finished_run) == {
        "benchmark_model": 2,  # its eager and fast jobs, nobody else's
        "aggregate_results": 1,
        "render_charts": 1,
        "render_summary": 1,
        "report": 1,
    }


def test_dtype_change_rebenchmarks_both_backends_without_refetching(finished_run):
    edit_config(
        finished_run, lambda c: c["models"]["qwen2.5-1.5b-instruct"].update(dtype="float32")
    )
    jobs = planned_jobs(finished_run)
    assert jobs.get("benchmark_model") == 2  # eager and fast
    assert "fetch_model" not in jobs


def test_revision_change_refetches_that_model_only(finished_run):
    edit_config(finished_run, lambda c: c["models"]["blip-base"].update(revision="v2"))
    jobs = planned_jobs(finished_run)
    assert jobs["fetch_model"] == 1 and jobs["benchmark_model"] == 2  # eager and fast


def test_disabling_a_model_drops_its_row_without_rerunning_others(finished_run):
    edit_config(finished_run, lambda c: c["models"]["blip-base"].update(enabled=False))
    assert planned_jobs(finished_run) == {
        "aggregate_results": 1,
        "render_charts": 1,  # the charts show one model fewer
        "render_summary": 1,
        "report": 1,
    }


def test_a_global_setting_reruns_every_model(finished_run):
    edit_config(finished_run, lambda c: c.update(memory_headroom_gb=0.25))
    jobs = planned_jobs(finished_run)
    assert jobs["fetch_model"] == 7
    assert jobs["benchmark_model"] == 13  # seven models, six of them with two backends


def test_losing_snakemake_metadata_reruns_nothing(finished_run):
    shutil.rmtree(finished_run / ".snakemake")
    assert planned_jobs(finished_run) == {}


def test_adding_a_model_runs_only_that_model(finished_run):
    def add(config):
        config["models"]["blip-copy"] = dict(config["models"]["blip-base"])

    edit_config(finished_run, add)
    assert planned_jobs(finished_run) == {
        "fetch_model": 1,
        "benchmark_model": 2,  # eager and fast
        "aggregate_results": 1,
        "render_charts": 1,
        "render_summary": 1,
        "report": 1,
    }


def test_a_thread_count_change_remeasures_without_refetching(finished_run):
    edit_config(finished_run, lambda c: c.update(threads=1))
    jobs = planned_jobs(finished_run)
    assert jobs.get("fetch_model", 0) == 0
    assert jobs["warm_up_device"] == 1
    assert jobs["benchmark_model"] == 13

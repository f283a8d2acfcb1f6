"""Faults injected for real (issue 7): runs killed by signals, corrupt weights, running
out of memory, random configs, and secrets that must never be written anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import ROOT, SNAKEMAKE, TINY, snakemake

MODEL = "qwen2.5-1.5b-instruct"


def one_model_config(workdir: Path, model: str = MODEL, backend: str = "eager") -> None:
    """Keep one model (one backend) and no pipelines: the smallest real run."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["models"] = {model: {**config["models"][model], "backend": backend}}
    config["pipelines"] = {}
    config["benchmark_defaults"].update(warmup_runs=0, repetitions=1, prompt_tokens=8, new_tokens=2)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def wait_for(condition, what: str, process: subprocess.Popen | None = None) -> None:
    """Poll until ``condition()``; fail if ``process`` ends first. No timing is asserted."""
    deadline = time.monotonic() + 600  # a hang guard only
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"snakemake ended before {what}:\n{out[-2000:]}\n{err[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def assert_outputs_whole(workdir: Path) -> None:
    """Every result, manifest, record and summary present parses; no visible partial file."""
    for folder in ("results", "models", "archive"):
        for path in (workdir / folder).rglob("*"):
            if not path.is_file() or "/logs/" in path.as_posix():
                continue
            assert not path.name.endswith((".tmp", ".partial")) or path.name.startswith("."), path
            if path.suffix == ".json":
                json.loads(path.read_text())  # a half-written JSON file would not parse


# Each run is killed while a different job runs; the next run carries on from there.
KILLS = [
    (signal.SIGINT, f"fetch_model/{MODEL}.log"),  # Ctrl-C
    (signal.SIGTERM, f"benchmark_model/{MODEL}/eager.log"),  # a service manager's stop
    (signal.SIGKILL, "render_summary.log"),  # the OOM killer, a power cut
]


def test_killed_runs_leave_whole_outputs_and_the_next_run_finishes(workdir):
    one_model_config(workdir)
    logs = workdir / "results/test-machine/logs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf-home")}
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    for signum, log in KILLS:
        run = subprocess.Popen(
            [*command, "--cores", "1", "report", *TINY],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        # The job has started (a job opens its log first).
        wait_for((logs / log).exists, f"{log} to start", run)
        jobs = psutil.Process(run.pid).children(recursive=True)
        if signum == signal.SIGKILL:
            # Snakemake itself dies at once while its job runs on, writes its outputs and
            # exits: they exist, but Snakemake never recorded the job as finished, and
            # its lock stays behind.
            os.kill(run.pid, signum)
        else:
            os.killpg(run.pid, signum)
        run.communicate()
        psutil.wait_procs(jobs)
        assert_outputs_whole(workdir)

    summary = workdir / "results/test-machine/SUMMARY.md"
    if summary.exists() and any((workdir / ".snakemake/incomplete").iterdir()):
        # Without the workflow profile's rerun-incomplete the next run would stop here.
        bare = snakemake(workdir, "-n", "report", *TINY, "--workflow-profile", "none", check=False)
        assert bare.returncode != 0 and "Incomplete" in bare.stderr + bare.stdout

    snakemake(workdir, "--cores", "1", "report", *TINY)  # the plain command, nothing added
    assert_outputs_whole(workdir)
    result = workdir / "results/test-machine/benchmarks" / MODEL / "eager.json"
    assert json.loads(result.read_text())["status"] == "measured"
    assert "Nothing to be done" in snakemake(workdir, "-n", "report", *TINY).stdout


def tiny_settings(name: str, **benchmark) -> dict:
    from localbench import config as lbconfig

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(size="tiny", weights="synthetic", device="cpu")
    config["benchmark_defaults"].update(
        warmup_runs=0, repetitions=1, prompt_tokens=8, new_tokens=2, image_size=[64, 48]
    )
    settings = {**lbconfig.model_settings(config, name), "backend": "eager"}
    settings["benchmark"].update(benchmark)
    return settings


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    from localbench.acquire import acquire

    settings = tiny_settings("blip-base")
    dest = tmp_path_factory.mktemp("models") / "blip-base"
    manifest = acquire(settings, dest)
    assert manifest["status"] == "ready"
    return settings, manifest, dest


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_weights_are_fetched_again_not_loaded(tiny_blip, damage):
    from localbench.runner import run_benchmark

    settings, manifest, dest = tiny_blip
    weights = dest / "model.safetensors"
    whole = weights.read_bytes()
    if damage == "truncated":
        with open(weights, "r+b") as handle:
            handle.truncate(len(whole) // 2)
    else:
        weights.unlink()
    result = run_benchmark(settings, manifest, dest, {})
    assert result["status"] == "measured", result["reason"]
    assert weights.read_bytes() == whole  # seeded rebuild: the very same bytes


def test_running_out_of_memory_is_recorded_and_the_next_job_runs(tiny_blip):
    from localbench.runner import run_benchmark

    settings, manifest, dest = tiny_blip
    # A real allocation failure: a 10^7 x 10^7 benchmark picture cannot be allocated.
    huge = {**settings, "benchmark": {**settings["benchmark"], "image_size": [10**7, 10**7]}}
    failed = run_benchmark(huge, manifest, dest, {})
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("out of memory: ") and "\n" not in failed["reason"]
    # Same process, memory given back: the next model runs.
    assert run_benchmark(settings, manifest, dest, {})["status"] == "measured"

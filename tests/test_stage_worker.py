"""The run's stage worker (localbench.pipelines.worker): pipeline stage jobs handed to one
process give the same outputs as jobs run in their own processes, the worker ends with
its run, and a job it cannot take runs in its own process (real snakemake, real worker
processes, tiny models on the CPU with ``pipeline_worker: always``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, TINY, snakemake
from localbench.config import ConfigError, check_config
from localbench.pipelines import worker
from localbench.pipelines.job import BatchJob
from localbench.pipelines.plan import RESERVED_STAGE_NAMES
from test_pipelines import make_inputs, out

PIPELINES = ("voice-notes", "photo-stories")


def batch_records(workdir: Path) -> list[dict]:
    return [
        json.loads(path.read_text())
        for pipeline in PIPELINES
        for path in sorted((out(workdir, pipeline) / "batches").glob("*/*.json"))
    ]


def outputs(workdir: Path) -> dict[str, bytes]:
    """Every output file of the two pipelines, by its path in the pipeline's folder."""
    found = {}
    for pipeline in PIPELINES:
        root = out(workdir, pipeline)
        for path in root.glob("*/*"):
            if path.parent.name not in RESERVED_STAGE_NAMES and path.is_file():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


def wait_until_gone(pid: int, seconds: float = 15.0) -> bool:
    """True once process ``pid`` has ended (a zombie of ours counts as ended)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same two pipelines over the same files, once with every stage job in its own
    process and once through the stage worker, one job at a time."""
    runs = {}
    for mode in ("never", "always"):
        workdir = tmp_path_factory.mktemp(f"worker-{mode}")
        shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
        make_inputs(workdir)
        snakemake(workdir, "--cores", "1", *PIPELINES, *TINY, f"pipeline_worker={mode}")
        runs[mode] = workdir
    return runs


def test_jobs_through_the_worker_give_the_same_outputs(two_runs):
    own, through = outputs(two_runs["never"]), outputs(two_runs["always"])
    assert len(own) >= 20 and own.keys() == through.keys()
    assert [name for name in own if own[name] != through[name]] == []
    # Failed files too (a broken recording, a corrupt image): the same FAILED lines.
    assert any(content.startswith(b"FAILED: ") for content in through.values())


def test_one_worker_ran_every_stage_job_and_loaded_the_next_model_early(two_runs):
    records = batch_records(two_runs["always"])
    assert len(records) == 4
    workers = [record["worker"] for record in records]
    # One worker for the run: imports paid once, its jobs counted.
    assert len({w["pid"] for w in workers}) == 1
    assert sorted(w["job"] for w in workers) == [1, 2, 3, 4]
    assert all(w["began_unix"] >= w["received_unix"] for w in workers)
    # A stage that ran right after the stage before it took the model loaded for it,
    # and says so; the first stage of the run loaded its own.
    early = [r for r in records if "loaded_before_job" in r]
    assert early and all(r["settings"]["index"] == 1 for r in early)
    assert all(r["load_s"] > 0 for r in records)
    first = next(r for r in records if r["worker"]["job"] == 1)
    assert "loaded_before_job" not in first
    # The command line named the pipelines: Snakemake started the worker as it planned.
    assert {w["started_by"] for w in workers} == {worker.STARTED_WHILE_PLANNING}
    # The jobs in their own processes say nothing of a worker.
    assert all("worker" not in r for r in batch_records(two_runs["never"]))


def test_the_worker_ends_with_its_run(two_runs):
    pid = batch_records(two_runs["always"])[0]["worker"]["pid"]
    assert wait_until_gone(pid)
    log = two_runs["always"] / "results" / "test-machine" / "logs" / "pipelines"
    text = (log / "stage-worker.log").read_text()
    assert "the Snakemake run ended; ending" in text
    # Its socket went with it.
    socket = Path(text.split(" on ", 1)[1].split()[0])
    assert socket.name.startswith("stage-worker-") and not socket.exists()
    # Each stage job's log says where it ran.
    stage_logs = [path.read_text() for path in log.glob("*/*/*.log")]
    assert len(stage_logs) == 4
    assert all("run by the stage worker" in text for text in stage_logs)


def test_the_setting_is_checked_and_auto_means_accelerators():
    config = {"pipeline_worker": "sometimes", "models": {}}
    with pytest.raises(ConfigError, match="pipeline_worker: 'sometimes' is not allowed"):
        check_config(config)
    assert worker.wanted("always", "cpu") and not worker.wanted("never", "cuda")
    assert worker.wanted("auto", "cuda") and worker.wanted("auto", "mps")
    assert not worker.wanted("auto", "cpu")
    with pytest.raises(ValueError, match="pipeline_worker"):
        worker.wanted("on", "cpu")


def test_the_worker_starts_while_snakemake_plans_where_the_command_line_names_a_pipeline():
    roots = {
        "voice-notes": "results/m/pipelines/voice-notes",
        "photo-stories": "results/m/pipelines/photo-stories",
    }
    assert worker.named_pipelines(["--cores", "1", "voice-notes"], roots) == ["voice-notes"]
    assert worker.named_pipelines(["pipelines", "--cores", "1"], roots) == list(roots)
    report = "results/m/pipelines/photo-stories/REPORT.md"
    assert worker.named_pipelines(["--cores", "1", report], roots) == ["photo-stories"]
    # The benchmark's report, a look-alike folder, a config value: no pipeline.
    for arguments in (
        ["report"],
        ["results/m/pipelines/voice-notes-old/x"],
        ["--config", "pipelines=x"],
    ):
        assert worker.named_pipelines(arguments, roots) == []
    # Nothing is started for a run that names none, or where its jobs would not ask.
    assert worker.start_while_planning(["report"], roots, 1, "cpu", "always") is None
    assert worker.start_while_planning(["voice-notes"], roots, 1, "cpu", "auto") is None
    assert worker.start_while_planning(["voice-notes"], roots, 1, "cuda", "never") is None


def test_a_job_not_started_by_a_local_run_runs_in_its_own_process(tmp_path, monkeypatch):
    monkeypatch.delenv(worker.RUN_PID_VARIABLE, raising=False)
    answer, reason = worker.hand_over(job_in(tmp_path), "cpu", "always", {})
    assert answer is None and reason == "not a job of a local Snakemake run"
    # A pid that is not this process's parent (another run's) is not taken either.
    monkeypatch.setenv(worker.RUN_PID_VARIABLE, str(os.getpid()))
    assert worker.run_process() is None


def job_in(folder: Path) -> BatchJob:
    """A job whose settings file does not exist: it fails as soon as it starts."""
    return BatchJob(
        settings=str(folder / "no-such-settings.json"),
        manifest=str(folder / "manifest.json"),
        batch="b1",
        names=[],
        sources=[],
        outputs=[],
        questions=[],
        previous=None,
        reuse=str(folder / "reuse"),
        record=str(folder / "record.json"),
        log=str(folder / "job.log"),
        threads=1,
    )


@pytest.fixture
def run_and_socket(tmp_path):
    """A stand-in for a Snakemake run (a sleeping process) and a socket path for its
    worker; both ended after the test."""
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    folder = Path(os.path.realpath("/tmp")) / f"lb-test-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir(mode=0o700)
    yield psutil.Process(run.pid), folder / "w.sock"
    run.kill()
    run.wait()
    shutil.rmtree(folder, ignore_errors=True)


def test_a_failing_job_fails_with_one_line_and_a_busy_worker_turns_a_job_away(
    tmp_path, run_and_socket
):
    run, path = run_and_socket
    job = job_in(tmp_path)
    first = worker.connect_or_start(path, run, job.threads, "cpu", "always")
    worker._send(first, {"job": job.to_dict(), "client": os.getpid(), "startup": {}})
    assert worker._receive(first) == {"state": "accepted"}
    # While the first job is taken (the worker is still importing torch), another is not.
    second = worker.connect_or_start(path, run, job.threads, "cpu", "always")
    assert worker.exchange(second, job, {}) == (None, "the worker was busy with another job")
    answer = worker._receive(first)
    first.close()
    assert answer["state"] == "failed"
    assert "no-such-settings.json" in answer["reason"] and "\n" not in answer["reason"]
    assert "traceback in" in answer["reason"] and "Traceback" in Path(job.log).read_text()
    assert worker.exit_status(answer) == 1
    # The worker goes on: the next job is taken, and fails the same way.
    answer, reason = worker.exchange(
        worker.connect_or_start(path, run, job.threads, "cpu", "always"), job, {}
    )
    assert reason is None and answer["state"] == "failed"


def test_the_worker_ends_when_its_run_ends_or_its_job_s_process_goes(tmp_path, run_and_socket):
    run, path = run_and_socket
    job = job_in(tmp_path)
    connection = worker.connect_or_start(path, run, job.threads, "cpu", "always")
    worker._send(connection, {"job": job.to_dict(), "client": os.getpid(), "startup": {}})
    assert worker._receive(connection) == {"state": "accepted"}
    pid = worker_pid(path)
    # The job's process goes away before its job ran (Snakemake cancelled it): the worker
    # ends rather than run it for nobody.
    connection.close()
    assert wait_until_gone(pid) and not path.exists()
    # A new worker for the same run ends with the run.
    answer, _ = worker.exchange(
        worker.connect_or_start(path, run, job.threads, "cpu", "always"), job, {}
    )
    assert answer["state"] == "failed"
    pid = worker_pid(path)
    run.kill()
    assert wait_until_gone(pid) and not path.exists()


def worker_pid(path: Path) -> int:
    """The pid of the worker listening on ``path``."""
    for process in psutil.process_iter(["pid", "cmdline"]):
        if str(path) in (process.info["cmdline"] or []):
            return process.info["pid"]
    raise AssertionError(f"no worker on {path}")


def test_a_job_whose_run_ended_under_the_worker_fails_instead_of_running_alone(
    tmp_path, run_and_socket, monkeypatch
):
    run, path = run_and_socket
    log = tmp_path / "stage-worker.log"
    monkeypatch.setenv(worker.WORKER_LOG_VARIABLE, str(log))
    # The job's settings file is a pipe no one writes: the job waits in the worker.
    job = job_in(tmp_path)
    os.mkfifo(job.settings)
    connection = worker.connect_or_start(path, run, job.threads, "cpu", "always")
    pid = worker_pid(path)
    result = {}
    waiting = threading.Thread(
        target=lambda: result.update(answer=worker.exchange(connection, job, {}, run))
    )
    waiting.start()
    deadline = time.monotonic() + 60
    while "job 1:" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the worker never began the job"
        time.sleep(0.05)
    run.kill()  # the run ends while the worker runs its job: the worker ends
    waiting.join(60)
    answer, reason = result["answer"]
    assert reason is None and answer == {
        "state": "failed",
        "reason": "error: the Snakemake run of this job ended",
    }
    assert wait_until_gone(pid)


def test_messages_sent_together_are_read_one_at_a_time():
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        # An answer can follow "accepted" at once (a job that fails at its first line).
        theirs.sendall(b'{"state": "accepted"}\n{"state": "failed", "reason": "x"}\n{"a"')
        assert worker._receive(ours) == {"state": "accepted"}
        assert worker._receive(ours) == {"state": "failed", "reason": "x"}
        theirs.sendall(b": 1}\n")
        theirs.close()
        assert worker._receive(ours) == {"a": 1}
        assert worker._receive(ours) is None


def test_a_model_loaded_early_is_taken_by_its_stage_and_let_go_by_any_other(tiny_qwen, tmp_path):
    import gc
    import weakref

    from localbench.pipelines.batch import open_engine

    model, manifest, folder = tiny_qwen
    settings = {"model": model, "backend": "eager"}
    loader = worker.Worker(tmp_path / "w.sock", psutil.Process(), "cpu", "always")

    def load_early() -> weakref.ref:
        record: dict = {}
        engine = open_engine(settings, manifest, folder, record)
        loader.waiting = {
            "key": worker.engine_key(settings, manifest, folder),
            "engine": engine,
            "record": record,
            "loaded_at": "then",
            "loaded_unix": 1.0,
        }
        return weakref.ref(engine)

    # Its own stage takes it, with the load's figures and when it happened.
    early = load_early()
    record: dict = {}
    assert loader.open_engine(settings, manifest, folder, record) is early()
    assert loader.waiting is None and record["load_s"] > 0
    assert record["loaded_before_job"]["loaded_unix"] == 1.0
    # A stage that opens it otherwise (another batch size) gets its own; the early one
    # is let go, not held beside it.
    early = load_early()
    record = {}
    other = loader.open_engine({**settings, "decode_batch": 2}, manifest, folder, record)
    gc.collect()
    assert early() is None and other is not None and "loaded_before_job" not in record
    # After a job that took nothing (every file reused), the engine loaded for it is let
    # go when the next stage is not one to load early.
    early = load_early()
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"pipeline": "p", "stage": "last", "index": 3}))
    loader.preload(replace(job_in(tmp_path), settings=str(settings_file)))
    gc.collect()
    assert loader.waiting is None and early() is None
    loader.listener.close()

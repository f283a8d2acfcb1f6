"""The run's stage worker: one process that runs the pipeline stage jobs of one local
Snakemake run, so that Python, torch, transformers and the device start once per run
instead of once per job, and the next stage's model loads while Snakemake starts its job.

Why: on the H200 machine a stage job spent 8.5-10.7 s importing torch and transformers
and 2-3 s loading its model, for 3-4 s of work over 100 files
(docs/benchmarks/2026-12-03-cuda-h200-pipelines-timeline.md). A pipeline of two stages
paid that twice; transformers' own ``pipeline()`` in one script pays it once.

How a job gets run:

- Where the command line names a pipeline, Snakemake's own process starts the worker
  while it reads the workflow and plans the run (:func:`start_while_planning`), so that
  its imports overlap Snakemake's start instead of following it.
- A stage job (``workflow/scripts/run_pipeline_stage.py``) asks for the worker before it
  imports torch (:func:`hand_over`): it connects to the run's socket, starting the worker
  if there is none, sends its :class:`~localbench.pipelines.job.BatchJob` and waits. The
  worker runs the job as the job's own process would
  (:func:`localbench.pipelines.job.run_job`): same outputs, record and log. The job's
  process then exits with the job's status.
- After a job, the worker loads the model of the stage that follows it in the same
  pipeline (the settings file of index + 1), on an accelerator and where it takes at
  most a quarter of the free memory, while Snakemake finishes the job and starts the next.
  The job of that stage takes the loaded model, and its record says so
  (``loaded_before_job``); any other job closes it first. At most one model is held.
- Where the worker does not take a job, the job runs in its own process as before, and
  its record says why (``worker.not_used``): the worker is busy with another job
  (``--cores`` above 1), could not start, or ended while it ran the job.

Scope and lifetime:

- Only jobs of the main Snakemake process of a local run: the Snakefile leaves that
  process's pid in ``LOCALBENCH_RUN_PID`` (a job on a cluster node parses the Snakefile
  in its own Snakemake, which clears it), and a job uses the worker only when that
  process is its parent (or the parent of its shell).
- The worker ends when that Snakemake process ends, when it has had no job for
  :data:`IDLE_EXIT_S`, and, at once, when the process of the job it runs goes away
  (Snakemake cancelled the job): as the job's own process would have.
- Its socket lies in a folder only this user may open (0700), named after the run's pid,
  the Python executable and this library: a job never reaches another run's worker or
  one of another environment. Nothing listens on the network.
- config ``pipeline_worker``: ``auto`` (jobs whose model runs on CUDA or MPS, where the
  start-up is the larger cost), ``always``, ``never``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import queue
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from localbench.atomic import read_json
from localbench.engine.threads import ACCELERATORS, job_device_type, start_openmp_with
from localbench.logs import process_started_unix
from localbench.pipelines.job import BatchJob
from localbench.results import one_line
from localbench.status import READY

# Set by the Snakefile (rules/common.smk) in its main process.
RUN_PID_VARIABLE = "LOCALBENCH_RUN_PID"
WORKER_LOG_VARIABLE = "LOCALBENCH_WORKER_LOG"
MODES = ("auto", "always", "never")
# With no job for this long the worker ends, freeing the device: between the stage jobs
# of a pipeline Snakemake takes a fraction of a second.
IDLE_EXIT_S = 10.0
# A started worker binds its socket before importing anything heavy.
START_TIMEOUT_S = 30.0
# The next stage's model is loaded early only where it takes at most this share of the
# device's free memory (its checkpoint's bytes, twice, against the free memory).
PRELOAD_SHARE = 0.25
POLL_S = 0.25
LIBRARY = Path(__file__).resolve().parents[1]


def wanted(mode: str, device: str) -> bool:
    """Whether a stage job on ``device`` (its settings' ``auto|cuda|mps|cpu``) asks for
    the stage worker, by config ``pipeline_worker`` (``mode``)."""
    if mode not in MODES:
        raise ValueError(f"pipeline_worker: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "never" or os.name != "posix" or not hasattr(socket, "AF_UNIX"):
        return False
    return mode == "always" or job_device_type(device) in ACCELERATORS


def run_process() -> psutil.Process | None:
    """The main Snakemake process of this local run, if it is this process's parent or
    grandparent; else None (no run pid, a cluster job, a job run by hand)."""
    value = os.environ.get(RUN_PID_VARIABLE, "")
    if not value.isdigit():
        return None
    try:
        return next((p for p in psutil.Process().parents()[:3] if p.pid == int(value)), None)
    except psutil.Error:
        return None


def alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (the same process: psutil checks its start time; a
    zombie, ended but not yet reaped by its parent, does not run)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def socket_folder() -> Path | None:
    """This user's folder for workers' sockets, made 0700; None if it cannot be made or
    another user could open it."""
    folder = Path(tempfile.gettempdir()) / f"localbench-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    return folder if private and not info.st_mode & 0o077 else None


def socket_path(folder: Path, run_pid: int) -> Path:
    """The socket of run ``run_pid``'s worker for this Python and this library."""
    key = f"{sys.executable}\0{LIBRARY}\0{sys.version}".encode()
    return folder / f"stage-worker-{run_pid}-{hashlib.sha256(key).hexdigest()[:12]}.sock"


def _connect(path: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        raise
    return connection


def _start(path: Path, run: psutil.Process, threads: int, device: str, mode: str, by: str):
    """Start the worker of ``run`` on ``path``, its output appended to the run's worker
    log; in a session of its own, so that cancelling the job that started it does not end
    it (its lifetime is the run's). ``by``: who started it, for its records."""
    log = os.environ.get(WORKER_LOG_VARIABLE) or os.devnull
    if log != os.devnull:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    path_entries = [str(LIBRARY.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    command = [
        sys.executable, "-m", "localbench.pipelines.worker", "--socket", str(path),
        "--run-pid", str(run.pid), "--run-started", repr(run.create_time()),
        "--threads", str(threads), "--device", device, "--mode", mode, "--started-by", by,
    ]  # fmt: skip
    with open(log, "a", encoding="utf-8") as output:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path_entries)},
        )


STARTED_BY_JOB = "the first stage job"
STARTED_WHILE_PLANNING = "Snakemake, while it planned the run"


def connect_or_start(
    path: Path, run: psutil.Process, threads: int, device: str, mode: str, by: str = STARTED_BY_JOB
):
    """A connection to the worker on ``path``, started for ``run`` (with ``threads``
    torch threads, ``device`` and config ``pipeline_worker`` ``mode``) if none answers."""
    with contextlib.suppress(OSError):
        return _connect(path)
    # One job starts the worker; a job that waited for the lock finds it started.
    import fcntl

    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):
            return _connect(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # the socket of a worker that ended
        process = _start(path, run, threads, device, mode, by)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                return _connect(path)
            except OSError:
                if process.poll() is not None:
                    raise OSError(f"it exited with status {process.returncode}") from None
                if time.monotonic() > deadline:
                    raise OSError(f"no socket after {START_TIMEOUT_S:.0f} s") from None
                time.sleep(0.01)


def _send(connection: socket.socket, message: dict) -> None:
    connection.sendall((json.dumps(message) + "\n").encode("utf-8"))


def _receive(connection: socket.socket) -> dict | None:
    """One message (a JSON line), and nothing of the next one; None when the other side
    closed first."""
    data = b""
    while True:
        # Look before taking: a second message may already follow the first.
        chunk = connection.recv(65536, socket.MSG_PEEK)
        if not chunk:
            return None
        end = chunk.find(b"\n")
        wanted = len(chunk) if end < 0 else end + 1
        while wanted:
            taken = connection.recv(wanted)
            if not taken:
                return None
            data += taken
            wanted -= len(taken)
        if end >= 0:
            return json.loads(data)


def hand_over(
    job: BatchJob, device: str, mode: str, startup: dict
) -> tuple[dict | None, str | None]:
    """Have the run's stage worker run ``job`` (starting it if needed, for config
    ``pipeline_worker`` ``mode``) and wait for it.

    Returns the worker's answer (``{"state": "done"}`` or ``{"state": "failed",
    "reason": ...}``) and None, or None and why the job must run in its own process."""
    run = run_process()
    if run is None:
        return None, "not a job of a local Snakemake run"
    folder = socket_folder()
    if folder is None:
        return None, "no private folder for its socket"
    try:
        connection = connect_or_start(socket_path(folder, run.pid), run, job.threads, device, mode)
    except (OSError, psutil.Error) as error:
        return None, f"the worker could not start: {error}"
    return exchange(connection, job, startup, run)


# The targets that run every pipeline; a pipeline's own target is its name.
ALL_PIPELINES_TARGET = "pipelines"


def named_pipelines(arguments: list[str], pipelines: dict[str, str]) -> list[str]:
    """The pipelines (``pipelines``: name -> results folder) whose target or files
    Snakemake's command line ``arguments`` name: ``pipelines`` (all), a pipeline's name,
    or a path in a pipeline's results folder."""
    if ALL_PIPELINES_TARGET in arguments:
        return list(pipelines)
    return [
        name
        for name, root in pipelines.items()
        if name in arguments or any(a == root or a.startswith(f"{root}/") for a in arguments)
    ]


def start_while_planning(
    arguments: list[str], pipelines: dict[str, str], threads: int, device: str, mode: str
) -> threading.Thread | None:
    """In Snakemake's main process, as it reads the workflow: start the run's worker
    where the command line names a pipeline (:func:`named_pipelines`) whose jobs would
    ask for it (:func:`wanted`), in a thread, so that Snakemake goes on planning while
    the worker imports torch. Returns the thread, or None where nothing was started.

    A worker started for a run that has no stage job to do (its files are up to date)
    imports for nothing and ends with the run; a stage job of a run not named here starts
    the worker itself, as before."""
    if not named_pipelines(arguments, pipelines) or not wanted(mode, device):
        return None
    folder = socket_folder()
    if folder is None:
        return None
    run = psutil.Process()

    def start() -> None:
        with contextlib.suppress(OSError, psutil.Error):
            path = socket_path(folder, run.pid)
            connect_or_start(path, run, threads, device, mode, STARTED_WHILE_PLANNING).close()

    thread = threading.Thread(target=start, name="localbench-stage-worker-start", daemon=True)
    thread.start()
    return thread


ENDED_WHILE_RUNNING = "the worker ended while it ran the job"


def exchange(
    connection: socket.socket, job: BatchJob, startup: dict, run: psutil.Process | None = None
) -> tuple[dict | None, str | None]:
    """Send ``job`` to the worker at the other end of ``connection`` and wait for its
    answer (see :func:`hand_over`); the connection is closed after. A worker that ended
    while it ran the job leaves the job to its own process, unless ``run`` (the job's
    Snakemake run) has ended too: then the job fails, as it would have with its run."""
    answer, reason = _exchange(connection, job, startup)
    if reason == ENDED_WHILE_RUNNING and run is not None and not alive(run):
        return {"state": "failed", "reason": "error: the Snakemake run of this job ended"}, None
    return answer, reason


def _exchange(
    connection: socket.socket, job: BatchJob, startup: dict
) -> tuple[dict | None, str | None]:
    with connection:
        try:
            _send(connection, {"job": job.to_dict(), "client": os.getpid(), "startup": startup})
            if (accepted := _receive(connection)) is None:
                return None, "the worker ended before it took the job"
            if accepted["state"] == "busy":
                return None, "the worker was busy with another job"
            if (answer := _receive(connection)) is None:
                return None, ENDED_WHILE_RUNNING
        except (OSError, ValueError) as error:
            return None, f"the worker's socket failed: {error}"
    return answer, None


def _closed(connection: socket.socket) -> bool:
    """Whether the other side has closed ``connection`` (without waiting)."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def exit_status(answer: dict) -> int:
    """The job process's exit status for the worker's ``answer``; a failure's line goes
    to stderr, as when the job's own process fails."""
    if answer.get("state") == "done":
        return 0
    print(answer.get("reason") or "error: the stage worker failed the job", file=sys.stderr)
    return 1


# The worker's side.


def _say(message: str) -> None:
    """A line in the worker's own log (stderr as started: a job's log redirects
    ``sys.stderr`` while it runs)."""
    print(f"{time.strftime('%H:%M:%S')} stage worker {os.getpid()}: {message}",
          file=sys.__stderr__, flush=True)  # fmt: skip


def _end(path: Path, status: int = 0) -> None:
    """End the worker at once: its socket and lock removed, no interpreter teardown (the
    device's memory is freed with the process)."""
    for leftover in (path, path.with_suffix(".lock")):
        with contextlib.suppress(OSError):
            leftover.unlink()
    with contextlib.suppress(Exception):
        sys.__stderr__.flush()
    os._exit(status)


def engine_key(settings: dict, manifest: dict, model_dir: Path) -> str:
    """What decides the engine a stage opens: its model's settings and manifest, its
    folder, and the stage's backend settings."""
    keys = ("model", "backend", "decode_batch", "compile")
    opened = {key: settings.get(key) for key in keys}
    return json.dumps([opened, manifest, str(Path(model_dir).resolve())], sort_keys=True)


def next_stage(settings_file: str) -> dict | None:
    """The settings of the stage after the one ``settings_file`` holds, in the same
    pipeline (its settings file lies beside), or None."""
    settings = read_json(settings_file)
    for candidate in sorted(Path(settings_file).parent.glob("*.json")):
        with contextlib.suppress(Exception):
            other = read_json(candidate)
            if (
                isinstance(other, dict)
                and other.get("pipeline") == settings["pipeline"]
                and other.get("index") == settings["index"] + 1
                and other.get("previous_stage") == settings["stage"]
            ):
                return other
    return None


class Worker:
    """Accepts jobs on its socket (one at a time; a job that comes while one runs is told
    the worker is busy), runs them in the main thread, and loads the next stage's model
    after each."""

    def __init__(
        self, path: Path, run: psutil.Process, device: str, mode: str, by: str = STARTED_BY_JOB
    ) -> None:
        self.path = path
        self.started_by = by
        self.run = run
        self.device = device
        self.mode = mode
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o077)
        try:
            self.listener.bind(str(path))
        finally:
            os.umask(previous)
        self.listener.listen(8)
        self.jobs: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.busy = False  # a job accepted and not yet answered
        self.preloading = False
        self.last_job_end = time.monotonic()
        self.started_unix = process_started_unix()
        self.imports_s: float | None = None
        self.count = 0
        self.waiting: dict | None = None  # the next stage's engine, loaded early

    def accept(self) -> None:
        """Thread: take each connection's job, or tell it the worker is busy."""
        while True:
            connection, _ = self.listener.accept()
            try:
                connection.settimeout(5.0)
                request = _receive(connection)
                connection.settimeout(None)
                if request is None:
                    connection.close()
                    continue
                with self.lock:
                    busy, self.busy = self.busy, True
                if busy:
                    _send(connection, {"state": "busy"})
                    connection.close()
                    continue
                request["received_unix"] = time.time()
                _send(connection, {"state": "accepted"})
                self.jobs.put((connection, request))
            except (OSError, ValueError) as error:
                _say(f"a request could not be read: {error}")
                with contextlib.suppress(OSError):
                    connection.close()

    def watch_run(self) -> None:
        """Thread: end the worker when the run ends, or after IDLE_EXIT_S without a job."""
        while True:
            time.sleep(POLL_S)
            if not alive(self.run):
                _say("the Snakemake run ended; ending")
                _end(self.path)
            with self.lock:
                idle = (
                    not (self.busy or self.preloading)
                    and time.monotonic() - self.last_job_end > IDLE_EXIT_S
                )
            if idle:
                _say(f"no job for {IDLE_EXIT_S:.0f} s; ending")
                _end(self.path)

    def watch_client(self, connection: socket.socket, finished: threading.Event) -> None:
        """Thread: the job's process went away before its answer (Snakemake cancelled the
        job): end at once, as that process would have."""
        with contextlib.suppress(OSError):
            while connection.recv(1):
                pass
        if not finished.is_set():
            _say("the job's process went away; ending")
            _end(self.path, 1)

    def open_engine(self, settings: dict, manifest: dict, model_dir: Path, record: dict):
        """The stage's engine: the one loaded early for it, if it is this one (the record
        then holds that load's figures and says when it happened), else opened now."""
        from localbench.pipelines.batch import open_engine

        waiting = self.waiting
        if waiting is not None and waiting["key"] == engine_key(settings, manifest, model_dir):
            self.waiting = None
            record.update(waiting["record"])
            record["loaded_before_job"] = {
                "loaded_at": waiting["loaded_at"],
                "loaded_unix": waiting["loaded_unix"],
                "why": "the stage worker loaded it after the previous stage's job",
            }
            return waiting["engine"]
        self.drop_waiting()
        return open_engine(settings, manifest, model_dir, record)

    def drop_waiting(self) -> None:
        """Close the engine loaded early, if any, and give its memory back."""
        from localbench.engine.device import release_memory

        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            device = waiting["engine"].loaded.device
            waiting["engine"].close()
            del waiting
            release_memory(device)

    def preload(self, job: BatchJob) -> None:
        """Load the model of the stage after ``job``'s, where it runs on an accelerator
        (any device with ``pipeline_worker: always``) and takes at most PRELOAD_SHARE of
        the free memory; an engine loaded early for another stage is closed first. Never
        raises: a model not loaded early is opened by its job."""
        from localbench import results
        from localbench.engine.device import available_memory_bytes, resolve_device
        from localbench.pipelines.batch import open_engine

        try:
            settings = next_stage(job.settings)
            device_type = settings and job_device_type(settings["model"]["device"])
            if settings is None or (self.mode != "always" and device_type not in ACCELERATORS):
                self.drop_waiting()
                return
            model_dir = Path(job.manifest).parent.parent / settings["model"]["name"]
            manifest = read_json(model_dir / "manifest.json")
            key = engine_key(settings, manifest, model_dir)
            if self.waiting is not None and self.waiting["key"] == key:
                return
            self.drop_waiting()
            if manifest.get("status") != READY:
                return
            checkpoint = sum(f.stat().st_size for f in model_dir.rglob("*.safetensors"))
            free, _ = available_memory_bytes(resolve_device(settings["model"]["device"]))
            if 2 * checkpoint > PRELOAD_SHARE * free:
                _say(f"not loading {settings['model']['name']} early: {free / 2**30:.1f} GiB free")
                return
            record: dict = {}
            engine = open_engine(settings, manifest, model_dir, record)
            self.waiting = {
                "key": key,
                "engine": engine,
                "record": record,
                "loaded_at": results.now_utc(),
                "loaded_unix": round(time.time(), 3),
            }
            _say(f"loaded {settings['model']['name']} for stage {settings['stage']} "
                 f"in {record['load_s']:.2f} s")  # fmt: skip
        except Exception as error:  # noqa: BLE001 - its job opens the model itself
            _say(f"the next stage's model was not loaded early: {one_line(error)}")

    def run_one(self, connection: socket.socket, request: dict) -> None:
        """Run one job and answer its process."""
        from localbench.pipelines.job import run_job

        if _closed(connection):
            _say("the job's process went away before its job began; ending")
            _end(self.path, 1)
        self.count += 1
        job = BatchJob.from_dict(request["job"])
        finished = threading.Event()
        threading.Thread(target=self.watch_client, args=(connection, finished), daemon=True).start()
        worker = {
            "pid": os.getpid(),
            "job": self.count,
            "process_started_unix": self.started_unix,
            "started_by": self.started_by,
            "imports_s": self.imports_s,
            "received_unix": round(request["received_unix"], 3),
            "began_unix": round(time.time(), 3),
        }
        _say(f"job {self.count}: {job.record}")
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                run_job(job, request["startup"], open_engine=self.open_engine, worker=worker)
            answer = {"state": "done"}
        except SystemExit:  # the job's log holds the traceback; stderr got one line
            answer = {"state": "failed", "reason": errors.getvalue().strip()}
        except BaseException as error:  # noqa: BLE001 - the job fails, the worker goes on
            answer = {"state": "failed", "reason": f"error: {one_line(error)}"}
        finished.set()
        with contextlib.suppress(OSError):
            _send(connection, answer)
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()
        with self.lock:
            self.busy = False
            self.preloading = True
        _say(f"job {self.count}: {answer['state']}")
        self.preload(job)
        with self.lock:
            self.preloading = False
            self.last_job_end = time.monotonic()

    def serve(self, threads: int) -> None:
        """Import the library's heavy part, then run jobs until the run ends."""
        threading.Thread(target=self.accept, daemon=True).start()
        threading.Thread(target=self.watch_run, daemon=True).start()
        start_openmp_with(threads, self.device)
        began = time.perf_counter()
        import localbench.pipelines.batch  # noqa: F401 - torch, transformers, the engine

        self.imports_s = round(time.perf_counter() - began, 3)
        with self.lock:  # idle from now: importing is not idling
            self.last_job_end = time.monotonic()
        _say(f"ready (imports {self.imports_s:.2f} s)")
        while True:
            connection, request = self.jobs.get()
            self.run_one(connection, request)


def main(argv: list[str] | None = None) -> None:
    """``python -m localbench.pipelines.worker``: started by :func:`hand_over`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--run-pid", required=True, type=int)
    parser.add_argument("--run-started", required=True, type=float)
    parser.add_argument("--threads", required=True, type=int)
    parser.add_argument("--device", required=True)
    parser.add_argument("--mode", choices=MODES, default="auto")
    parser.add_argument("--started-by", default=STARTED_BY_JOB)
    args = parser.parse_args(argv)
    try:
        run = psutil.Process(args.run_pid)
        if run.create_time() != args.run_started:
            raise psutil.NoSuchProcess(args.run_pid)
    except psutil.Error:
        _say(f"run {args.run_pid} is not running; not starting")
        sys.exit(1)
    worker = Worker(args.socket, run, args.device, args.mode, args.started_by)
    _say(f"started for run {run.pid} on {args.socket} by {args.started_by}")
    try:
        worker.serve(args.threads)
    except BaseException as error:  # noqa: BLE001 - the socket goes with the worker
        _say(f"ending: {one_line(error)}")
        _end(args.socket, 1)


if __name__ == "__main__":
    main()

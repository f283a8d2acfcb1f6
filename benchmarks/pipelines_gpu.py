"""Our pipelines against the transformers peer on one GPU, in one device call.

    python3 benchmarks/pipelines_gpu.py            # the device call; carry .whl

In order, each step logged to <work>/logs/<step>.log:

1. installs the carried wheels (``.whl/*.whl``: snakemake, transformers 5, soundfile,
   espeakng-loader, ...) into /tmp/site and puts it first on PYTHONPATH;
2. writes --count voice notes and photos (benchmarks/pipeline_files.py) into the
   pipelines' input folders (inputs/audio, inputs/images);
3. builds the stages' checkpoints where missing, through the fetch rule
   (``--config weights=synthetic``: full-size architectures, random weights);
4. per pipeline: deletes its results (models kept) and times
   ``python -m snakemake --cores 1 <pipeline> --config <same config>`` end to end, then
   the peer (benchmarks/pipeline_peers.py) over the same files and checkpoints; with
   ``--before <git archive .tgz>``, the same command first in that earlier tree (its own
   results folder, this tree's models and inputs linked); with ``--cold-bytecode``, ours
   twice: first with localbench's bytecode cache deleted (``bytecode_cache``, the first
   run on a machine), then again, results deleted, as timed above; with
   ``--peer-bytecode``, the peer once more, given the bytecode cache ours made
   (``PYTHONPYCACHEPREFIX``), to show what that cache is worth to it;
5. prints a table (seconds end to end, per stage load and inference seconds and files/s,
   output tokens of both), with ``--before`` how many output files the two trees share
   byte for byte, and the timeline of our run of each pipeline (Snakemake's start, each
   stage job's parts and exit, the gaps between, the end); writes summary.json and packs
   the pipelines' results, the peer's outputs and JSON and the logs into
   $OUT/pipelines-gpu.tar.gz.

The whole run keeps to --deadline seconds (570: a device call's 10 minutes less the
start); a step that would start too late is skipped, one that runs over is stopped
(SIGTERM to its process group, then SIGKILL) and the summary says so. Only the standard
library is imported here, and the library's light modules (localbench.logs, the cache
folders, the pipeline's folder names), which import neither torch nor transformers; CPU
smoke test, from a clone with the venv:

    python benchmarks/pipelines_gpu.py --no-install --count 4 --peer-device cpu \
        --config size=tiny weights=synthetic device=cpu --work /tmp/pipelines-gpu
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

from localbench.engine.caches import bytecode_folder, use_bytecode_cache  # noqa: E402 - as below
from localbench.logs import process_started_unix  # noqa: E402 - needs the path above

T0 = time.monotonic()
# Seconds kept for the summary and the archive after the last step.
RESERVE_S = 25
# The least time worth starting a step with: ours and the peer for one pipeline.
MIN_OURS_S = 90
MIN_PEER_S = 45
STOP_GRACE_S = 15


def elapsed() -> float:
    return time.monotonic() - T0


def _signal_group(pid: int, signum: int) -> None:
    """Signal the process group of a step started here (its own session)."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


class Runner:
    def __init__(self, args, env: dict) -> None:
        self.args = args
        self.env = env
        self.logs = args.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.steps: list[dict] = []

    def left(self) -> float:
        return self.args.deadline - elapsed() - RESERVE_S

    def run(
        self,
        name: str,
        command: list[str],
        need_s: float = 0,
        stdout: Path | None = None,
        cwd: Path = ROOT,
        env: dict | None = None,
    ):
        """Run ``command`` in ``cwd`` (the repository), output to logs/<name>.log (standard
        output to ``stdout`` if given), stopped at the deadline; the step's record (seconds,
        exit status, or why it did not run)."""
        step = {"step": name, "command": shlex.join(command)}
        self.steps.append(step)
        left = self.left()
        if left < need_s:
            step["status"] = f"skipped: {left:.0f} s left, {need_s:.0f} s needed"
            print(f"[{elapsed():6.1f} s] {name}: {step['status']}", flush=True)
            return step
        print(f"[{elapsed():6.1f} s] {name}: {step['command']}", flush=True)
        log = self.logs / f"{name}.log"
        step["started_unix"] = time.time()
        start = time.monotonic()
        with log.open("w") as sink, open(stdout or os.devnull, "w") as out:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env or self.env,
                stdout=out if stdout else sink,
                stderr=sink,
                start_new_session=True,  # its own group: stopped whole at the deadline
            )
            try:
                rc = process.wait(timeout=max(1.0, left))
                step["status"] = "done" if rc == 0 else f"failed: exit status {rc}"
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
                _signal_group(process.pid, signal.SIGKILL)  # its jobs too, if any are left
                process.wait()
                step["status"] = f"stopped at the deadline after {time.monotonic() - start:.0f} s"
        step["seconds"] = round(time.monotonic() - start, 3)
        print(f"[{elapsed():6.1f} s] {name}: {step['status']}, {step['seconds']:.1f} s", flush=True)
        if step["status"] != "done":
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print("\n".join(f"    {line}" for line in tail), flush=True)
        return step


def install(args, env: dict) -> None:
    wheels = sorted(glob.glob(str(ROOT / ".whl" / "*.whl")))
    if not wheels:
        raise SystemExit("no wheels in .whl/: carry them (run's carry: [.whl])")
    # Bytecode compiled at install, as a user's pip does: otherwise the first process to
    # import transformers pays for compiling it, and the sides would not start alike.
    command = [args.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    command += ["--no-cache-dir", "--upgrade", "--target", args.site, *wheels]
    start = time.monotonic()
    subprocess.run(command, check=True)
    print(
        f"[{elapsed():6.1f} s] installed {len(wheels)} wheels into {args.site} "
        f"({time.monotonic() - start:.1f} s)",
        flush=True,
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (args.site, env.get("PYTHONPATH")) if p)


def peer_command(args, *extra: str) -> list[str]:
    command = [args.python, "benchmarks/pipeline_peers.py", "--pipelines", *args.pipelines]
    return command + ["--config", *args.config, *extra]


def our_records(pattern: str) -> dict:
    """Per stage of a pipeline, from its batch records: jobs (model loads), files done
    and failed, summed seconds (process start to the script, imports, checkpoint check,
    load, inference and the compile and capture within it), files/s over the inference
    seconds."""
    stages: dict[str, dict] = {}
    for path in sorted(glob.glob(pattern)):
        record = json.loads(Path(path).read_text())
        stage = stages.setdefault(
            record["stage"],
            {
                "model": record["model"],
                "jobs": 0,
                "done": 0,
                "failed": 0,
                "before_script_s": 0.0,
                "imports_s": 0.0,
                "check_s": 0.0,
                "load_s": 0.0,
                "worker_wait_s": 0.0,
                "loaded_early_s": 0.0,
                "inference_s": 0.0,
                "capture_s": 0.0,
                "backend": set(),
                "started": record.get("started_at", ""),
            },
        )
        stage["started"] = min(stage["started"], record.get("started_at", ""))
        stage["jobs"] += 1
        startup = record.get("startup") or {}
        stage["before_script_s"] += startup.get("before_script_s") or 0.0
        stage["imports_s"] += startup.get("imports_s") or 0.0
        stage["check_s"] += record.get("check_s") or 0.0
        # Run by the stage worker: the job waited for its start (imports) or for the model
        # it loaded early, and a model loaded before the job is not the job's time.
        worker = record.get("worker") or {}
        if "pid" in worker:
            stage["worker_wait_s"] += worker["began_unix"] - worker["received_unix"]
        early = "loaded_before_job" in record
        stage["loaded_early_s" if early else "load_s"] += record.get("load_s") or 0.0
        stage["inference_s"] += record.get("inference_s") or 0.0
        stage["capture_s"] += (record.get("engine") or {}).get("graph_capture_s") or 0.0
        stage["backend"].add(str(record.get("backend")))
        for item in record.get("files", []):
            stage["done" if item.get("status") == "done" else "failed"] += 1
    for stage in stages.values():
        stage["backend"] = ",".join(sorted(stage["backend"]))
        for key in ("before_script_s", "imports_s", "check_s", "load_s", "capture_s",
                    "worker_wait_s", "loaded_early_s"):  # fmt: skip
            stage[key] = round(stage[key], 3)
        stage["inference_s"] = round(stage["inference_s"], 3)
        seconds = stage["inference_s"]
        stage["files_per_s"] = round(stage["done"] / seconds, 3) if seconds > 0 else None
    # In the order the stages ran (the file names sort them by name).
    return dict(sorted(stages.items(), key=lambda item: item[1].pop("started")))


def timeline(
    pattern: str, started_unix: float | None, wall_s: float | None, exits: list | None = None
) -> list[dict]:
    """One run of a pipeline as segments, in seconds from the snakemake command's start:
    each stage job from its process's start to its record written (the file's time),
    split into the interpreter's start, imports, load, inference (graph capture within
    it) and the rest (CUDA start, checkpoint check, reading and writing files); between
    and around them, Snakemake's time (planning, starting jobs, the report, the summary
    line, exiting). Empty where a record lacks its process's start."""
    if started_unix is None or wall_s is None:
        return []
    jobs = []
    for path in glob.glob(pattern):
        record = json.loads(Path(path).read_text())
        startup = record.get("startup") or {}
        if startup.get("process_started_unix") is None:
            return []
        begin = startup["process_started_unix"] - started_unix
        end = Path(path).stat().st_mtime - started_unix
        worker = record.get("worker") or {}
        parts = {
            "python start": startup.get("before_script_s") or 0.0,
            "imports": startup.get("imports_s") or 0.0,
            # The stage worker's imports (its first job) or the model it loads early.
            "waiting for the worker": (
                worker["began_unix"] - worker["received_unix"] if "pid" in worker else 0.0
            ),
            "load": 0.0 if "loaded_before_job" in record else record.get("load_s") or 0.0,
            "inference": record.get("inference_s") or 0.0,
        }
        parts["other"] = (end - begin) - sum(parts.values())
        # The process's exit, where the watcher saw it: from the record written to the
        # process gone.
        gone = [
            last
            for first, last in exits or []
            if abs(first - startup["process_started_unix"]) < 0.05
        ]
        if gone:
            parts["exit"] = max(0.0, gone[0] - started_unix - end)
            end += parts["exit"]
        capture = (record.get("engine") or {}).get("graph_capture_s") or 0.0
        jobs.append({"stage": record["stage"], "from": begin, "to": end, "parts": parts,
                     "capture": capture})  # fmt: skip
    jobs.sort(key=lambda job: job["from"])
    segments, at = [], 0.0
    for job in jobs:
        segments.append({"what": "snakemake" if not segments else "between jobs",
                         "from": at, "to": job["from"]})  # fmt: skip
        segments.append({"what": job["stage"], **job})
        at = job["to"]
    segments.append({"what": "report, summary line, exit", "from": at, "to": wall_s})
    return worker_segments(pattern, started_unix) + segments


def worker_segments(pattern: str, started_unix: float) -> list[dict]:
    """The stage worker's start, beside the jobs: from its process's start to the end of
    its imports, and who started it (Snakemake while it planned, or the first job)."""
    for path in glob.glob(pattern):
        worker = json.loads(Path(path).read_text()).get("worker") or {}
        if worker.get("process_started_unix") and worker.get("imports_s") is not None:
            begin = worker["process_started_unix"] - started_unix
            return [{"what": f"stage worker start, by {worker.get('started_by', 'a job')}",
                     "from": begin, "to": begin + worker["imports_s"], "beside": True}]  # fmt: skip
    return []


def timeline_text(name: str, segments: list[dict]) -> list[str]:
    lines = [f"{name} timeline (s from the command's start):"]
    for segment in segments:
        span = f"  {segment['from']:6.2f} - {segment['to']:6.2f}  {segment['what']}"
        if "parts" in segment:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in segment["parts"].items())
            span += f" ({parts}; capture {segment['capture']:.2f} of the inference)"
        else:
            span += f" ({segment['to'] - segment['from']:.2f})"
        lines.append(span)
    return lines


def compare_outputs(before_root: Path, ours_root: Path) -> dict:
    """Per stage folder, how many output files the two trees share and how many of them
    are byte for byte the same."""
    from localbench.pipelines.plan import RESERVED_STAGE_NAMES  # the pipeline's own folders

    counts: dict[str, dict] = {}
    for ours in sorted(ours_root.glob("*/*")):
        stage = ours.parent.name
        if stage in RESERVED_STAGE_NAMES or not ours.is_file():
            continue
        before = before_root / stage / ours.name
        entry = counts.setdefault(stage, {"files": 0, "same": 0})
        if before.is_file():
            entry["files"] += 1
            entry["same"] += before.read_bytes() == ours.read_bytes()
    return counts


class StageExits(threading.Thread):
    """Watches /proc every 20 ms while a pipeline runs: for each stage job's process (a
    command line naming run_pipeline_stage.py), its start (as the job's record computes
    it) and when it was last seen, so the timeline can tell a job's exit from
    Snakemake's time after it. Linux only; elsewhere it sees nothing."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, list[float]] = {}  # pid: [started unix, last seen unix]
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            now = time.time()
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                pid = int(entry.name)
                if pid in self.seen:
                    if (entry / "cmdline").exists():
                        self.seen[pid][1] = now
                    continue
                try:
                    command = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"run_pipeline_stage.py" in command and b"python" in command:
                    started = process_started_unix(pid)  # as the job's record places it
                    if started is not None:
                        self.seen[pid] = [started, now]

    def stop(self) -> list[list[float]]:
        self.done.set()
        self.join()
        return sorted(self.seen.values())


def count_ours(runner: Runner, args) -> dict:
    """Files, characters and tokens of our outputs, counted as the peer counts its own."""
    roots = sorted(glob.glob(str(ROOT / "results" / "*" / "pipelines")))
    if not roots:
        return {}
    out = args.work / "our-output-counts.json"
    step = runner.run(
        "count-our-outputs", peer_command(args, "--count-tokens", roots[0]), stdout=out
    )
    if step["status"] != "done":
        return {}
    return json.loads(out.read_text())


def run_peer(runner: Runner, args, name: str, tag: str, env: dict | None = None) -> dict:
    """The peer over pipeline ``name``'s files: its JSON to <work>/<tag>-<name>.json, its
    outputs under <work>/<tag>-outputs."""
    command = [
        args.python, "benchmarks/pipeline_peers.py", "--pipelines", name,
        "--config", *args.config, "--device", args.peer_device,
        "--batch-size", str(args.batch_size), "--out", str(args.work / f"{tag}-{name}.json"),
        "--outputs", str(args.work / f"{tag}-outputs"),
    ]  # fmt: skip
    return runner.run(f"{tag}-{name}", command, need_s=MIN_PEER_S, env=env)


def unpack_before(args) -> Path:
    """The tree of ``--before`` (a ``git archive`` .tgz), beside this one, with this
    tree's model checkpoints and input files linked in."""
    tree = args.work / "before-tree"
    tree.mkdir(parents=True)
    with tarfile.open(args.before) as bundle:
        bundle.extractall(tree, filter="data")
    for shared in ("models", "inputs"):
        (ROOT / shared).mkdir(exist_ok=True)
        (tree / shared).symlink_to(ROOT / shared)
    return tree


def summarise(
    runner: Runner,
    args,
    ours_steps: dict,
    before_tree: Path | None,
    before_wall: dict,
    cold_wall: dict | None = None,
) -> dict:
    counts = count_ours(runner, args)
    summary = {
        "count": args.count,
        "config": args.config,
        "batch_size": args.batch_size,
        "steps": runner.steps,
        "pipelines": {},
    }
    for name in args.pipelines:
        step = ours_steps.get(name) or {}
        ours = {"wall_s": step.get("seconds") if step.get("status") == "done" else None}
        if cold_wall and name in cold_wall:
            ours["cold_bytecode_wall_s"] = cold_wall[name]
        pattern = str(ROOT / f"results/*/pipelines/{name}/batches/*/*.json")
        ours["stages"] = our_records(pattern)
        ours["timeline"] = timeline(
            pattern, step.get("started_unix"), ours["wall_s"], step.get("stage_processes")
        )
        for stage, record in ours["stages"].items():
            record["output"] = counts.get(name, {}).get(stage)
        peer_path = args.work / f"peer-{name}.json"
        peer = json.loads(peer_path.read_text()) if peer_path.exists() else None
        cached_path = args.work / f"peer-bytecode-{name}.json"
        if peer and cached_path.exists():
            peer["bytecode_cache_end_to_end_s"] = json.loads(cached_path.read_text())[
                "end_to_end_s"
            ]
        summary["pipelines"][name] = {"ours": ours, "peer": peer}
        if before_tree:
            pattern = str(before_tree / f"results/*/pipelines/{name}/batches/*/*.json")
            roots = [sorted(glob.glob(str(tree / f"results/*/pipelines/{name}")))
                     for tree in (before_tree, ROOT)]  # fmt: skip
            summary["pipelines"][name]["before"] = {
                "wall_s": before_wall.get(name),
                "commit": args.before.name,
                "stages": our_records(pattern),
                "same_outputs": compare_outputs(Path(roots[0][0]), Path(roots[1][0]))
                if all(roots)
                else {},
            }
        if peer:
            summary.setdefault("peer_versions", peer["versions"] | {"gpu": peer["gpu"]})
    return summary


def table(summary: dict) -> str:
    lines = [
        "pipeline       stage         side  files  start s  import s  wait s  load s  "
        "early s  infer s  capture s  files/s  out tokens",
        "-------------  ------------  ----  -----  -------  --------  ------  ------  "
        "-------  -------  ---------  -------  ----------",
    ]
    totals = []
    for name, sides in summary["pipelines"].items():
        ours, peer = sides["ours"], sides["peer"]
        peer_stages = {
            s["stage"]: s for s in (peer or {}).get("pipelines", {}).get(name, {}).get("stages", [])
        }
        for stage in list(ours["stages"]) or list(peer_stages):
            for side, record in (
                *((("bef.", sides["before"]["stages"].get(stage)),) if "before" in sides else ()),
                ("ours", ours["stages"].get(stage)),
                ("peer", peer_stages.get(stage)),
            ):
                if not record:
                    lines.append(f"{name:13}  {stage:12}  {side:4}  (no record)")
                    continue
                files = record.get("done", record.get("files"))
                tokens = (record.get("output") or {}).get("tokens", "")
                lines.append(
                    f"{name:13}  {stage:12}  {side:4}  {files:5}  "
                    f"{_seconds(record.get('before_script_s'), ''):>7}  "
                    f"{_seconds(record.get('imports_s'), ''):>8}  "
                    f"{_seconds(record.get('worker_wait_s'), ''):>6}  {record['load_s']:6.1f}  "
                    f"{_seconds(record.get('loaded_early_s'), ''):>7}  "
                    f"{record['inference_s']:7.1f}  {_seconds(record.get('capture_s'), ''):>9}  "
                    f"{record['files_per_s'] or 0:7.2f}  {tokens:>10}"
                )
        peer_s = (peer or {}).get("end_to_end_s")
        ours_s = ours["wall_s"]
        ratio = f"{peer_s / ours_s:.2f}" if ours_s and peer_s else "-"
        totals.append(
            f"{name}: ours {_seconds(ours_s)} end to end (the snakemake command), peer "
            f"{_seconds(peer_s)} (process start to exit); peer s / ours s = {ratio}"
        )
        cached_s = (peer or {}).get("bytecode_cache_end_to_end_s")
        if cached_s:
            ratio = f"{cached_s / ours_s:.2f}" if ours_s else "-"
            totals.append(
                f"{name}: peer given our bytecode cache {_seconds(cached_s)}; "
                f"that / ours s = {ratio}"
            )
        if "cold_bytecode_wall_s" in ours:
            cold_s = ours["cold_bytecode_wall_s"]
            ratio = f"{peer_s / cold_s:.2f}" if cold_s and peer_s else "-"
            totals.append(
                f"{name}: ours with the bytecode cache deleted first {_seconds(cold_s)}; "
                f"peer s / that = {ratio}"
            )
        if "before" in sides:
            same = ", ".join(
                f"{stage} {c['same']} of {c['files']}"
                for stage, c in sides["before"].get("same_outputs", {}).items()
            )
            totals.append(
                f"{name}: before ({sides['before']['commit']}) "
                f"{_seconds(sides['before']['wall_s'])} end to end; outputs the same as "
                f"ours: {same or '-'}"
            )
        if ours.get("timeline"):
            totals.extend(timeline_text(name, ours["timeline"]))
    return "\n".join(lines + [""] + totals)


def _seconds(value: float | None, unit: str = " s") -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def pack(args, out: Path) -> None:
    """The pipelines' results, the peer's JSON and outputs, the logs: one archive."""
    archive = out / "pipelines-gpu.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        for path in sorted(glob.glob(str(ROOT / "results" / "*" / "pipelines"))):
            bundle.add(path, arcname=str(Path(path).relative_to(ROOT)))
        for path in sorted(glob.glob(str(ROOT / "results" / "*" / "logs" / "pipelines"))):
            bundle.add(path, arcname=str(Path(path).relative_to(ROOT)))
        bundle.add(args.work, arcname="work")
    print(f"[{elapsed():6.1f} s] {archive} ({archive.stat().st_size / 2**20:.1f} MiB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="files of each kind (100)")
    parser.add_argument("--pipelines", nargs="+", default=["voice-notes", "photo-stories"])
    parser.add_argument(
        "--config",
        nargs="+",
        default=["weights=synthetic"],
        help="snakemake's --config, the same for the fetch, ours and the peer",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="the peer's (16: ours)")
    parser.add_argument("--peer-device", default="auto")
    parser.add_argument("--deadline", type=float, default=570, help="seconds for everything")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pipelines-gpu"))
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/pipelines-gpu-out")
    )
    parser.add_argument(
        "--cold-bytecode",
        action="store_true",
        help="run ours once more first, localbench's bytecode cache deleted before it",
    )
    parser.add_argument(
        "--peer-bytecode",
        action="store_true",
        help="run the peer once more, given the bytecode cache ours made",
    )
    parser.add_argument("--site", default="/tmp/site")
    parser.add_argument("--no-install", action="store_true", help="use the packages at hand")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--before",
        type=Path,
        help="a `git archive` .tgz of an earlier commit: its pipelines run first, same files",
    )
    args = parser.parse_args(argv)
    if args.before:
        args.before = args.before.resolve()
        if not args.before.is_file():  # found now, not after minutes of building
            parser.error(f"--before: no such file: {args.before}")
    args.work = args.work.resolve()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if not args.no_install:
        install(args, env)
    runner = Runner(args, env)
    py = args.python
    files = runner.run(
        "files",
        [
            py,
            "benchmarks/pipeline_files.py",
            "--audio",
            "inputs/audio",
            "--images",
            "inputs/images",
            "--count",
            str(args.count),
            "--texts",
            str(args.work / "spoken.json"),
        ],
    )
    manifests_log = args.work / "manifests.txt"
    runner.run("list-checkpoints", peer_command(args, "--print-manifests"), stdout=manifests_log)
    manifests = manifests_log.read_text().split() if manifests_log.exists() else []
    models = runner.run(
        "checkpoints",
        [py, "-m", "snakemake", "--cores", "4", *manifests, "--config", *args.config],
    )
    ours_steps: dict[str, dict] = {}
    before_wall: dict[str, float | None] = {}
    cold_wall: dict[str, float | None] = {}
    before_tree = unpack_before(args) if args.before else None
    if files["status"] == "done" and models["status"] == "done":
        for path in glob.glob(str(ROOT / "results" / "*" / "pipelines")):
            shutil.rmtree(path)
        for name in args.pipelines:
            our_command = [py, "-m", "snakemake", "--cores", "1", name, "--config", *args.config]
            if before_tree:
                before = runner.run(
                    f"before-{name}",
                    our_command,
                    need_s=MIN_OURS_S,
                    cwd=before_tree,
                )
                before_wall[name] = before.get("seconds") if before["status"] == "done" else None
            if args.cold_bytecode:
                shutil.rmtree(bytecode_folder(), ignore_errors=True)
                cold = runner.run(
                    f"ours-cold-bytecode-{name}",
                    our_command,
                    need_s=MIN_OURS_S,
                )
                cold_wall[name] = cold.get("seconds") if cold["status"] == "done" else None
                for path in glob.glob(str(ROOT / "results" / "*" / "pipelines" / name)):
                    shutil.rmtree(path)
            watcher = StageExits()
            watcher.start()
            ours_steps[name] = runner.run(
                f"ours-{name}",
                our_command,
                need_s=MIN_OURS_S,
            )
            ours_steps[name]["stage_processes"] = watcher.stop()
            run_peer(runner, args, name, "peer")
            if args.peer_bytecode:
                cached = dict(runner.env)
                use_bytecode_cache("always", cached)  # as our jobs get it
                run_peer(runner, args, name, "peer-bytecode", env=cached)
    summary = summarise(runner, args, ours_steps, before_tree, before_wall, cold_wall)
    text = table(summary)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.work / "summary.txt").write_text(text + "\n")
    print("\n" + text + "\n", flush=True)
    for name in ("summary.json", "summary.txt", *(f"peer-{p}.json" for p in args.pipelines)):
        if (args.work / name).exists():
            shutil.copy(args.work / name, args.out / name)
    pack(args, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

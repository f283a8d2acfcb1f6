"""One stage over one batch of files, through the inference engine: the model opened once,
the files' requests run together in batches of the engine's size.

Whatever happens, every file of the batch gets its output file and a record: ``done``
with its text and latency, ``failed`` with the reason (its output file then holds one
``FAILED:`` line), or ``skipped`` when the previous stage failed on it. One file's
problem never costs the others their outputs: a file that cannot be read fails alone,
and a batch of requests that fails runs again one request at a time, so that only the
files whose own requests fail are failed.

Files a job of the same stage finished before, with the same settings, model, code and
file contents, are taken from :mod:`localbench.pipelines.reuse` instead of run again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from localbench import results
from localbench.atomic import read_json, write_text
from localbench.engine import memory
from localbench.engine.device import (
    DTYPES,
    release_memory,
    resolve_device,
    resolve_dtype,
    synchronize,
)
from localbench.engine.inference import Engine, Output
from localbench.engine.loading import load_model
from localbench.fetch.acquire import ensure_intact
from localbench.measure.progress import FileProgress
from localbench.pipelines import media, stages
from localbench.pipelines.reuse import FinishedFiles
from localbench.status import DONE, FAILED, READY, SKIPPED

FAILED_PREFIX = "FAILED: "
TIMER = (
    "the engine's: time.perf_counter; a batch starts after a device synchronisation, a "
    "token counts when it is on the host. A file's latency runs from the start of the "
    "batch of its first request to its last token"
)
# Audio and image files decoded and held in memory at once. A job on a GPU may hold a
# thousand files, and 64 photos of 2048 pixels a side are already 0.8 GB as RGB; text
# files are small, and a text stage reads them all to batch prompts of similar length.
MEDIA_FILES_IN_MEMORY = 64


@dataclass
class BatchItem:
    """One file of the batch: its name, what the stage reads, where its output goes."""

    name: str
    source: str  # the input file (first stage) or the previous stage's output file
    output: str
    questions: str | None = None  # an image's sidecar question file, if it has one


@dataclass
class FileRun:
    """One file's requests on their way through the engine: the outputs so far, by the
    request's index in the file, or the reason one of them failed."""

    item: BatchItem
    work: stages.FileRequests
    outputs: dict[int, Output] = field(default_factory=dict)
    reason: str | None = None
    recorded: bool = False

    @property
    def finished(self) -> bool:
        return self.reason is not None or len(self.outputs) == len(self.work.requests)


def _previous_records(path: str | None) -> dict[str, dict]:
    if not path:
        return {}
    return {record["name"]: record for record in read_json(path)["files"]}


def _reason(error: BaseException) -> str:
    """Why a file failed, in one line: an unreadable input's own words, else the error."""
    if isinstance(error, media.UnreadableInput):
        return str(error)
    reason = results.one_line(error)
    return f"out of memory: {reason}" if memory.is_out_of_memory(error) else reason


def _failed(item: BatchItem, status: str, reason: str) -> dict:
    """The record of a file that failed or was skipped; its output file gets one
    ``FAILED:`` line. Never raises: when even that line cannot be written, the record
    says so (Snakemake then reports the missing output)."""
    record = {"name": item.name, "status": status, "reason": reason, "output": item.output}
    try:
        write_text(item.output, f"{FAILED_PREFIX}{reason}\n")
    except Exception as error:  # noqa: BLE001 - the other files must still run
        record["reason"] = f"{reason}; its output file cannot be written: {results.one_line(error)}"
    return record


def open_engine(settings: dict, manifest: dict, model_dir: Path, record: dict) -> Engine:
    """The stage's model, opened once for the engine on the stage's backend; the record
    gets the device, dtype, load time and the backend used."""
    model_settings = settings["model"]
    if manifest.get("status") != READY:
        raise RuntimeError(
            f"model {model_settings['name']} is not available "
            f"({manifest.get('status')}: {manifest.get('reason')})"
        )
    # Damaged weights are fetched again, never loaded.
    start = time.perf_counter()
    problems = ensure_intact(model_settings, manifest, model_dir)
    record["check_s"] = time.perf_counter() - start
    if problems:
        raise RuntimeError("checkpoint damaged and not repaired: " + "; ".join(problems))
    device = resolve_device(model_settings["device"])
    dtype_name, _ = resolve_dtype(model_settings["dtype"], device)
    record.update(device=str(device), dtype=dtype_name)
    torch.manual_seed(0)
    synchronize(device)
    start = time.perf_counter()
    loaded = load_model(model_dir, model_settings["task"], DTYPES[dtype_name], device)
    synchronize(device)
    record["load_s"] = time.perf_counter() - start
    engine = Engine(
        loaded,
        settings.get("backend", "fast"),
        settings.get("decode_batch"),
        compile_steps=settings.get("compile", False),
    )
    record.update(backend=engine.backend, backend_note=engine.note)
    return engine


def _run_requests(engine: Engine, group: list[tuple[FileRun, int]], budget: int, log) -> None:
    """Run ``group`` (file, request index) as one batch; each output goes to its file.
    A batch that fails runs again one request at a time: only the files whose own
    request fails get the reason."""
    try:
        outputs = engine.run([run.work.requests[index] for run, index in group], budget)
    except Exception as error:  # noqa: BLE001 - the culprits are found one at a time
        if log:
            log.exception("a batch of %d requests failed", len(group))
        if memory.is_out_of_memory(error):
            release_memory(engine.loaded.device)
        if len(group) == 1:
            group[0][0].reason = _reason(error)
            return
        for run, index in group:
            if run.reason is None:
                _run_requests(engine, [(run, index)], budget, log)
        return
    for (run, index), output in zip(group, outputs, strict=True):
        run.outputs[index] = output


def _finish(run: FileRun, engine: Engine, settings: dict) -> dict:
    """The file's record, its output written: done with its text and timings, or failed."""
    item = run.item
    if run.reason is not None:
        return _failed(item, FAILED, run.reason)
    outputs = [run.outputs[index] for index in range(len(run.work.requests))]
    try:
        text, details = stages.file_text(run.work, outputs)
        write_text(item.output, text + "\n")
    except Exception as error:  # noqa: BLE001 - the other files must still run
        return _failed(item, FAILED, _reason(error))
    start = min(output.start for output in outputs)
    record = {
        "name": item.name,
        "status": DONE,
        "output": item.output,
        "text": text,
        "latency_s": max(output.end for output in outputs) - start,
        "first_token_s": min(output.first_token for output in outputs) - start,
        "prompt_tokens": sum(output.prompt_tokens for output in outputs),
        "new_tokens": sum(len(output.token_ids) for output in outputs),
        "backend": engine.backend,
        "decode_batch": max(output.details.get("batch", 1) for output in outputs),
        **run.work.details,
        **details,
    }
    if settings.get("decode_batch"):
        record["decode_batch_rule"] = f"decode_batch: {settings['decode_batch']} in the stage"
    elif rule := next(
        (o.details["batch_rule"] for o in outputs if "batch_rule" in o.details), None
    ):
        record["decode_batch_rule"] = rule
    return record


def batch_size_of(engine: Engine, requests: list[tuple[FileRun, int]], budget: int, log) -> int:
    """How many of ``requests`` the engine runs together. A request it refuses even to
    size (a recording too short to hold a word, an empty prompt) fails its file here,
    and the others are sized without it."""

    def size_of(some: list[tuple[FileRun, int]]) -> int:
        return engine.batch_size([run.work.requests[index] for run, index in some], budget)

    try:
        return size_of(requests)
    except Exception:  # noqa: BLE001 - the refused requests are found one at a time
        if log:
            log.exception("the engine could not size a batch of %d requests", len(requests))
    for run, index in requests:
        if run.reason is None:
            try:
                size_of([(run, index)])
            except Exception as error:  # noqa: BLE001 - this file fails, the others go on
                run.reason = _reason(error)
    live = [(run, index) for run, index in requests if run.reason is None]
    try:
        return size_of(live) if live else 1
    except Exception:  # noqa: BLE001 - then each request runs alone
        return 1


def _run_files(
    engine: Engine,
    runs: list[FileRun],
    settings: dict,
    progress: FileProgress,
    log,
    keep=lambda item, record: None,
) -> list[dict]:
    """The records of ``runs``: their requests in batches of the engine's size, each file
    finished (written, recorded, counted, ``keep(item, record)``) after the batch that
    completes it."""
    requests = [(run, index) for run in runs for index in range(len(run.work.requests))]
    if engine.task == "text-generation":
        # Longest prompts first: each batch holds prompts of similar length (little
        # padding), and the first, longest batch sizes the fast decoder's cache, which
        # the batches after it reuse instead of building and compiling a larger one.
        tokenizer = engine.tokenizer
        requests.sort(
            key=lambda request: len(tokenizer(request[0].work.requests[0].text)["input_ids"]),
            reverse=True,
        )
    budget = settings["max_new_tokens"]
    size = batch_size_of(engine, requests, budget, log)
    files = []
    for start in range(0, len(requests), size):
        group = requests[start : start + size]
        began = time.perf_counter()
        # A file that failed already (one of its questions) asks nothing more.
        if live := [(run, index) for run, index in group if run.reason is None]:
            _run_requests(engine, live, budget, log)
        took = time.perf_counter() - began
        records = []
        for run, _ in group:
            if run.finished and not run.recorded:
                run.recorded = True
                records.append(_finish(run, engine, settings))
                keep(run.item, records[-1])
        files.extend(records)
        for status in (DONE, FAILED):
            names = [r["name"] for r in records if r["status"] == status]
            progress.files_done(names, status, took if status == DONE else None)
    return files


def _read_files(
    engine: Engine, items: list[BatchItem], settings: dict, progress: FileProgress
) -> tuple[list[FileRun], list[dict]]:
    """Each file's requests, and the records of the files that cannot be read."""
    runs, failed = [], []
    for item in items:
        try:
            work = stages.file_requests(
                engine.loaded, engine.task, settings, item.source, item.name, item.questions
            )
        except Exception as error:  # noqa: BLE001 - one file's failure must not stop the batch
            failed.append(_failed(item, FAILED, _reason(error)))
            progress.files_done([item.name], FAILED)
            continue
        runs.append(FileRun(item, work))
    return runs, failed


def run_stage_batch(
    settings: dict,
    manifest: dict,
    model_dir: Path,
    batch_id: str,
    items: list[BatchItem],
    previous_batch: str | None = None,
    log=None,
    reuse_dir: str | Path | None = None,
    open_engine=open_engine,
) -> dict:
    """Run the stage ``settings`` describe over ``items``; return the batch record.

    ``previous_batch`` is the previous stage's record of the same batch: a file that
    failed there is skipped here. Files finished before are taken from ``reuse_dir``
    (:mod:`localbench.pipelines.reuse`; None: every file runs), and the files done here
    are kept there. ``open_engine(settings, manifest, model_dir, record)`` opens the
    stage's model (default: :func:`open_engine`; the stage worker's may hold it loaded
    already). Never raises for a model or file problem.
    """
    model_settings = settings["model"]
    task = model_settings["task"]
    record = {
        "pipeline": settings["pipeline"],
        "stage": settings["stage"],
        "batch": batch_id,
        "model": model_settings["name"],
        "task": task,
        "settings": settings,
        "synthetic": bool(manifest.get("synthetic")),
        "timer": TIMER,
        "started_at": results.now_utc(),
    }
    previous = _previous_records(previous_batch)
    progress = FileProgress(
        f"{settings['pipeline']}/{settings['stage']} batch {batch_id}", len(items), log
    )
    files: list[dict] = []
    pending = []
    finished = FinishedFiles(reuse_dir, settings, manifest) if reuse_dir else None
    reused = []
    for item in items:
        before = previous.get(item.name)
        if before is not None and before.get("status") != DONE:
            files.append(
                _failed(
                    item,
                    SKIPPED,
                    f"previous stage {settings['previous_stage']} did not produce an output",
                )
            )
            progress.files_done([item.name], SKIPPED)
        elif finished and (found := finished.find(item)):
            try:
                write_text(item.output, found["text"] + "\n")
            except OSError:
                pending.append(item)
                continue
            files.append(found)
            reused.append(item.name)
        else:
            pending.append(item)
    record["reused"] = len(reused)
    if reused:
        progress.files_done(reused, f"{DONE} (reused)")

    def keep(item: BatchItem, done: dict) -> None:
        if finished:
            measured = {"batch": batch_id, "started_at": record["started_at"]}
            finished.keep(item, done, measured)

    engine = None
    if pending:
        try:
            engine = open_engine(settings, manifest, model_dir, record)
        except Exception as error:  # noqa: BLE001 - the batch's files fail with the reason
            reason = _reason(error)
            if log:
                log.exception("stage %s: model not opened", settings["stage"])
            files.extend(_failed(item, FAILED, reason) for item in pending)
            progress.files_done([item.name for item in pending], FAILED)

    # The wall time of the files' inference (after the load): files run together
    # overlap, so their latencies do not add up to it.
    start = time.perf_counter()
    if engine is not None:
        # A text stage reads all its files at once (to batch similar lengths); audio and
        # images are read a window at a time.
        window = len(pending) if task == "text-generation" else MEDIA_FILES_IN_MEMORY
        for first in range(0, len(pending), window):
            runs, unreadable = _read_files(
                engine, pending[first : first + window], settings, progress
            )
            files.extend(unreadable)
            files.extend(_run_files(engine, runs, settings, progress, log, keep))
        # Plain JSON: what the runner says of its decoder (graphs, compilation).
        record["engine"] = json.loads(json.dumps(engine.details(), default=str))
        device = engine.loaded.device
        engine.close()
        del engine
        release_memory(device)
    progress.close()
    record["inference_s"] = time.perf_counter() - start
    order = {item.name: index for index, item in enumerate(items)}
    record["files"] = sorted(files, key=lambda f: order[f["name"]])
    record["finished_at"] = results.now_utc()
    return record

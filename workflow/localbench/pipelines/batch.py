"""One stage over one batch of files: the model is loaded once, then each file in turn.

Whatever happens, every file of the batch gets its output file and a record: ``done``
with its text and latency, ``failed`` with the reason (its output file then holds one
``FAILED:`` line), or ``skipped`` when the previous stage failed on it. One file's
problem never costs the others their outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from localbench import memory, results
from localbench.atomic import read_json, write_text
from localbench.device import DTYPES, release_memory, resolve_device, resolve_dtype, synchronize
from localbench.pipelines import media, stages

DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
FAILED_PREFIX = "FAILED: "
TIMER = "time.perf_counter, read after a device synchronisation at both ends"


@dataclass
class BatchItem:
    """One file of the batch: its name, what the stage reads, where its output goes."""

    name: str
    source: str  # the input file (first stage) or the previous stage's output file
    output: str
    questions: str | None = None  # an image's sidecar question file, if it has one


def _run_one(loaded, task: str, item: BatchItem, settings: dict):
    if task == "speech-recognition":
        return stages.transcribe(loaded, item.source, settings)
    if task == "image-captioning":
        return stages.caption(loaded, item.source, settings)
    if task == "visual-question-answering":
        return stages.answer(loaded, item.source, settings, item.questions)
    text = media.read_text_file(item.source)
    return stages.generate_text(loaded, text, settings, item.name)


def _previous_records(path: str | None) -> dict[str, dict]:
    if not path:
        return {}
    return {record["name"]: record for record in read_json(path)["files"]}


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


def _run_item(loaded, device, task: str, item: BatchItem, settings: dict, log) -> dict:
    """One file through the stage, timed, its output written: its record. Every step is
    inside this file's failure boundary, so one file never costs the others theirs."""
    try:
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            text, details = _run_one(loaded, task, item, settings)
        synchronize(device)
        latency_s = time.perf_counter() - start
        write_text(item.output, text + "\n")
    except media.UnreadableInput as error:
        return _failed(item, FAILED, str(error))
    except Exception as error:  # noqa: BLE001 - one file's failure must not stop the batch
        if log:
            log.exception("stage %s: %s failed", settings["stage"], item.name)
        if memory.is_out_of_memory(error):
            release_memory(device)
        return _failed(item, FAILED, results.one_line(error))
    return {
        "name": item.name,
        "status": DONE,
        "output": item.output,
        "text": text,
        "latency_s": latency_s,
        **details,
    }


def run_stage_batch(
    settings: dict,
    manifest: dict,
    model_dir: Path,
    batch_id: str,
    items: list[BatchItem],
    previous_batch: str | None = None,
    log=None,
) -> dict:
    """Run the stage ``settings`` describe over ``items``; return the batch record.

    ``previous_batch`` is the previous stage's record of the same batch: a file that
    failed there is skipped here. Never raises for a model or file problem.
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
    files: list[dict] = []
    pending = []
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
        else:
            pending.append(item)

    loaded = None
    device = None
    try:
        if manifest.get("status") != "ready":
            raise RuntimeError(
                f"model {model_settings['name']} is not available "
                f"({manifest.get('status')}: {manifest.get('reason')})"
            )
        if pending:
            from localbench.acquire import ensure_intact
            from localbench.loading import load_model

            # Damaged weights are fetched again, never loaded.
            if problems := ensure_intact(model_settings, manifest, model_dir):
                raise RuntimeError("checkpoint damaged and not repaired: " + "; ".join(problems))
            device = resolve_device(model_settings["device"])
            dtype_name, _ = resolve_dtype(model_settings["dtype"], device)
            record.update(device=str(device), dtype=dtype_name)
            torch.manual_seed(0)
            synchronize(device)
            start = time.perf_counter()
            loaded = load_model(model_dir, task, DTYPES[dtype_name], device)
            synchronize(device)
            record["load_s"] = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - the batch's files fail with the reason
        reason = results.one_line(error)
        if log:
            log.exception("stage %s: model not loaded", settings["stage"])
        files.extend(_failed(item, FAILED, reason) for item in pending)
        pending = []

    files.extend(_run_item(loaded, device, task, item, settings, log) for item in pending)
    del loaded
    if device is not None:
        release_memory(device)
    order = {item.name: index for index, item in enumerate(items)}
    record["files"] = sorted(files, key=lambda f: order[f["name"]])
    record["finished_at"] = results.now_utc()
    return record

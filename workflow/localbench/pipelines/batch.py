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
from localbench.measure.progress import FileProgress
from localbench.pipelines import media, stages
from localbench.status import DONE, FAILED, READY, SKIPPED

FAILED_PREFIX = "FAILED: "
TIMER = "time.perf_counter, read after a device synchronisation at both ends"


@dataclass
class BatchItem:
    """One file of the batch: its name, what the stage reads, where its output goes."""

    name: str
    source: str  # the input file (first stage) or the previous stage's output file
    output: str
    questions: str | None = None  # an image's sidecar question file, if it has one


def uses_fast_backend(loaded, settings: dict) -> bool:
    """Whether a text-generation stage decodes with the fast backend: its ``backend``
    setting (default fast) and a model the fast decoder supports."""
    from localbench.engine.backends.fast import supports

    return settings.get("backend", "fast") == "fast" and supports(loaded.model)[0]


def _run_one(loaded, task: str, item: BatchItem, settings: dict):
    if task == "speech-recognition":
        return stages.transcribe(loaded, item.source, settings)
    if task == "image-captioning":
        return stages.caption(loaded, item.source, settings)
    if task == "visual-question-answering":
        return stages.answer(loaded, item.source, settings, item.questions)
    text = media.read_text_file(item.source)
    return stages.generate_text(loaded, text, settings, item.name)


def _run_texts_fast(
    loaded, device, items: list[BatchItem], settings: dict, log, progress: FileProgress
) -> list[dict]:
    """A text-generation stage's files on the fast backend: prompts of similar length
    decoded together, as many at once as ``stages.decode_batch_size`` allows. A file whose
    input cannot be read fails alone; a failed decode fails the files decoded with it."""
    from localbench.engine.backends.fast import FastDecoder

    files, requests = [], []
    for item in items:
        try:
            text = media.read_text_file(item.source)
            requests.append((item, *stages.text_request(loaded, text, settings, item.name)))
        except media.UnreadableInput as error:
            files.append(_failed(item, FAILED, str(error)))
            progress.files_done([item.name], FAILED)
        except Exception as error:  # noqa: BLE001 - one file's failure must not stop the batch
            files.append(_failed(item, FAILED, results.one_line(error)))
            progress.files_done([item.name], FAILED)
    if not requests:
        return files
    requests.sort(key=lambda request: len(request[1]))  # little padding in each group
    max_len = max(len(ids) + budget for _, ids, budget in requests)
    size, why = stages.decode_batch_size(
        loaded, max_len, len(requests), settings.get("decode_batch")
    )
    try:
        with torch.inference_mode():
            decoder = FastDecoder(loaded.model, max_len=max_len, batch=size)
    except Exception as error:  # noqa: BLE001 - the files fail with the reason, the job ends
        if log:
            log.exception("stage %s: the decoder could not be set up", settings["stage"])
        if memory.is_out_of_memory(error):
            release_memory(device)
        reason = f"fast decoder for {size} sequences of {max_len} tokens: {results.one_line(error)}"
        progress.files_done([item.name for item, *_ in requests], FAILED)
        return files + [_failed(item, FAILED, reason) for item, *_ in requests]
    for start in range(0, len(requests), size):
        group = requests[start : start + size]
        group_start = time.perf_counter()
        try:
            answers = stages.generate_texts(
                loaded, [(ids, budget) for _, ids, budget in group], decoder
            )
        except Exception as error:  # noqa: BLE001 - the group's files fail with the reason
            if log:
                log.exception("stage %s: a decode batch failed", settings["stage"])
            if memory.is_out_of_memory(error):
                release_memory(device)
            files.extend(_failed(item, FAILED, results.one_line(error)) for item, *_ in group)
            progress.files_done([item.name for item, *_ in group], FAILED)
            continue
        # After the group's decode, whose timings are taken inside generate_texts.
        progress.files_done(
            [item.name for item, *_ in group], "decoded", time.perf_counter() - group_start
        )
        for (item, _, _), answer in zip(group, answers, strict=True):
            try:
                write_text(item.output, answer["text"] + "\n")
            except Exception as error:  # noqa: BLE001 - the other files must still run
                files.append(_failed(item, FAILED, results.one_line(error)))
                continue
            files.append(
                {
                    "name": item.name,
                    "status": DONE,
                    "output": item.output,
                    "backend": "fast",
                    "decode_batch": len(group),
                    "decode_batch_rule": why,
                    **answer,
                }
            )
    return files


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
    progress = FileProgress(
        f"{settings['pipeline']}/{settings['stage']} batch {batch_id}", len(items), log
    )
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
            progress.files_done([item.name], SKIPPED)
        else:
            pending.append(item)

    loaded = None
    device = None
    try:
        if manifest.get("status") != READY:
            raise RuntimeError(
                f"model {model_settings['name']} is not available "
                f"({manifest.get('status')}: {manifest.get('reason')})"
            )
        if pending:
            from localbench.engine.loading import load_model
            from localbench.fetch.acquire import ensure_intact

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
        progress.files_done([item.name for item in pending], FAILED)
        pending = []

    # The wall time of the files' inference (after the load): files decoded together
    # overlap, so their latencies do not add up to it.
    start = time.perf_counter()
    if pending and task == "text-generation" and uses_fast_backend(loaded, settings):
        record["backend"] = "fast"
        files.extend(_run_texts_fast(loaded, device, pending, settings, log, progress))
    else:
        record["backend"] = "eager"
        for item in pending:
            files.append(_run_item(loaded, device, task, item, settings, log))
            # Between files: the file's own timing is over.
            progress.files_done([item.name], files[-1]["status"], files[-1].get("latency_s"))
    progress.close()
    record["inference_s"] = time.perf_counter() - start
    del loaded
    if device is not None:
        release_memory(device)
    order = {item.name: index for index, item in enumerate(items)}
    record["files"] = sorted(files, key=lambda f: order[f["name"]])
    record["finished_at"] = results.now_utc()
    return record

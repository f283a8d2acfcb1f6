"""Files a stage finished are reused by a job run again, never timed as this run's."""

from __future__ import annotations

import json

import pytest
from localbench.pipelines.batch import BatchItem, run_stage_batch
from localbench.pipelines.report import render_report, report_context

NOTES = {
    "milk": "Buy milk and eggs on the way home.",
    "meeting": "The meeting moved to Thursday at ten, in the small room by the stairs.",
    "bad": b"\xff\xfe not UTF-8",
}


@pytest.fixture
def qwen(tiny_qwen):
    """The tiny model's summaries stage: its settings, manifest and model folder."""
    settings, manifest, folder = tiny_qwen
    stage = {
        "pipeline": "notes",
        "stage": "summaries",
        "index": 1,
        "model": settings,
        "max_new_tokens": 8,
        "extension": "md",
        "prompt": "Summarise this note.\n\n{previous}",
        "previous_stage": "transcripts",
        "backend": "eager",
    }
    return stage, manifest, folder


def run(qwen, folder, notes, batch="b0", **change):
    stage, manifest, model = qwen
    items = []
    for name, text in notes.items():
        source = folder / "in" / f"{name}.txt"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(text if isinstance(text, bytes) else text.encode())
        items.append(BatchItem(name, str(source), str(folder / "out" / f"{name}.md")))
    record = run_stage_batch(
        {**stage, **change}, manifest, model, batch, items, reuse_dir=folder / "reuse"
    )
    return record, {f["name"]: f for f in record["files"]}


def test_an_added_file_runs_alone_and_the_others_are_reused(qwen, tmp_path):
    first, before = run(qwen, tmp_path, NOTES)
    assert first["reused"] == 0 and first["load_s"] > 0
    assert [before[n]["status"] for n in NOTES] == ["done", "done", "failed"]
    # Only done files are kept; a failed one is tried again each time.
    assert len(list((tmp_path / "reuse").glob("*.json"))) == 2
    (tmp_path / "out" / "milk.md").unlink()  # Snakemake deletes a rerun job's outputs

    second, after = run(qwen, tmp_path, {**NOTES, "new": "Call the plumber."}, batch="b1")
    assert second["reused"] == 2 and second["load_s"] > 0
    for name in ("milk", "meeting"):
        assert after[name]["reused_from"] == {"batch": "b0", "started_at": first["started_at"]}
        assert after[name]["text"] == before[name]["text"]
        assert (tmp_path / "out" / f"{name}.md").read_text() == before[name]["text"] + "\n"
    assert "reused_from" not in after["new"] and after["new"]["status"] == "done"
    assert after["bad"]["status"] == "failed" and "not UTF-8" in after["bad"]["reason"]

    # Nothing new: the model is not even loaded.
    third, again = run(qwen, tmp_path, {n: t for n, t in NOTES.items() if n != "bad"})
    assert third["reused"] == 2 and "load_s" not in third and "engine" not in third
    assert {n: r["text"] for n, r in again.items()} == {
        n: before[n]["text"] for n in ("milk", "meeting")
    }


def test_what_changes_an_output_is_run_again(qwen, tmp_path):
    notes = {"milk": NOTES["milk"]}
    run(qwen, tmp_path, notes)
    assert run(qwen, tmp_path, notes)[0]["reused"] == 1
    # Another prompt, another token budget, other file contents: each runs.
    assert run(qwen, tmp_path, notes, prompt="In three words: {previous}")[0]["reused"] == 0
    assert run(qwen, tmp_path, notes, max_new_tokens=4)[0]["reused"] == 0
    assert run(qwen, tmp_path, {"milk": "Buy bread."})[0]["reused"] == 0
    # The same bytes under another name (a prompt may quote the name).
    assert run(qwen, tmp_path, {"copy of milk": NOTES["milk"]})[0]["reused"] == 0


def test_a_damaged_kept_file_is_run_again_and_kept_anew(qwen, tmp_path):
    notes = {"milk": NOTES["milk"]}
    _, before = run(qwen, tmp_path, notes)
    (kept,) = (tmp_path / "reuse").glob("*.json")
    kept.write_text('{"key": "', encoding="utf-8")
    record, after = run(qwen, tmp_path, notes)
    assert record["reused"] == 0 and after["milk"]["text"] == before["milk"]["text"]
    assert json.loads(kept.read_text())["record"]["text"] == before["milk"]["text"]


def test_reports_count_reused_files_and_time_only_this_run(qwen, tmp_path):
    _, before = run(qwen, tmp_path, NOTES)
    second, after = run(qwen, tmp_path, {**NOTES, "new": "Call the plumber."})
    stages = [{"name": "summaries", "model": "qwen2.5-1.5b-instruct"}]
    listing = {"folder": "inputs/notes", "note": None}
    context = report_context("notes", stages, listing, [second], "test-machine")
    (row,) = context["stages"]
    assert (row["done"], row["reused"], row["failed"]) == (3, 2, 1)
    # Latency statistics and files/s over the one file run here.
    assert row["p50_ms"] == row["p90_ms"] == f"{after['new']['latency_s'] * 1e3:.0f}"
    steps = {f["name"]: f["steps"][0] for f in context["files"]}
    assert (
        steps["milk"]["latency_ms"] is None and "reused: done by batch b0" in steps["milk"]["note"]
    )
    assert steps["new"]["latency_ms"] is not None
    timed = {f["name"] for f in context["files"] if f["end_to_end_ms"]}
    assert timed == {"new"}
    page = render_report(context)
    assert "(reused: done by batch b0 at " in page
    assert "| summaries | qwen2.5-1.5b-instruct (synthetic) | cpu | 3 | 2 | 1 | 0 |" in page

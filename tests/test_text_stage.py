"""A text-generation pipeline stage on the fast backend: a job's files decoded together
give the texts that generate() gives each file alone (tiny model, float32, CPU)."""

from __future__ import annotations

import pytest
from localbench.fetch.acquire import acquire
from localbench.pipelines.batch import BatchItem, run_stage_batch

NOTES = [
    "Buy milk and eggs on the way home.",
    "The meeting moved to Thursday at ten, in the small room by the stairs.",
    "Call the plumber.",
    "A long walk by the river, then tea at the old mill, then home before the rain came.",
    "",
]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    settings = {
        "name": "qwen2.5-1.5b-instruct",
        "task": "text-generation",
        "repo": "Qwen/Qwen2.5-1.5B-Instruct",
        "revision": "main",
        "allow_pickle": False,
        "dtype": "float32",
        "device": "cpu",
        "weights": "synthetic",
        "size": "tiny",
        "memory_headroom_gb": 0.5,
    }
    folder = tmp_path_factory.mktemp("text-stage") / "model"
    manifest = acquire(settings, folder)
    assert manifest["status"] == "ready", manifest
    return settings, manifest, folder


def _stage(qwen, tmp_path, notes=NOTES, **stage):
    settings, manifest, folder = qwen
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = {k: settings[k] for k in ("name", "task", "repo", "revision", "allow_pickle")}
    model.update(dtype="float32", device="cpu", weights="synthetic", size="tiny")
    stage_settings = {
        "pipeline": "notes",
        "stage": "summaries",
        "index": 1,
        "model": model,
        "max_new_tokens": 16,
        "extension": "md",
        "prompt": "Summarise this note.\n\n{previous}",
        "previous_stage": "transcripts",
        **stage,
    }
    items = []
    for index, text in enumerate(notes):
        source = tmp_path / f"in-{index}.txt"
        source.write_bytes(text if isinstance(text, bytes) else text.encode())
        items.append(BatchItem(f"note {index}", str(source), str(tmp_path / f"out-{index}.md")))
    return run_stage_batch(stage_settings, manifest, folder, "b0", items)


@pytest.mark.parametrize("decode_batch", [2, 5])
def test_fast_stage_texts_equal_eager_ones(qwen, tmp_path, decode_batch):
    eager = _stage(qwen, tmp_path / "eager", backend="eager")
    fast = _stage(qwen, tmp_path / "fast", backend="fast", decode_batch=decode_batch)
    assert eager["backend"] == "eager" and fast["backend"] == "fast"
    for before, after in zip(eager["files"], fast["files"], strict=True):
        assert before["name"] == after["name"]
        assert (before["status"], after["status"]) == ("done", "done"), (before, after)
        assert after["text"] == before["text"] and after["new_tokens"] == before["new_tokens"]
        assert after["decode_batch"] <= decode_batch
        assert f"decode_batch: {decode_batch}" in after["decode_batch_rule"]
    assert fast["inference_s"] > 0 and fast["load_s"] > 0


def test_fast_stage_sizes_its_batch_from_memory_and_fails_files_alone(qwen, tmp_path):
    notes = [*NOTES, b"\xff\xfe not UTF-8"]
    record = _stage(qwen, tmp_path, notes=notes, backend="fast")
    *done, bad = record["files"]
    assert [f["status"] for f in done] == ["done"] * len(NOTES)
    assert bad["status"] == "failed" and "not UTF-8" in bad["reason"]
    assert (tmp_path / f"out-{len(NOTES)}.md").read_text().startswith("FAILED: ")
    # Without a setting: every readable file of the job in one batch, the rule in words.
    assert {f["decode_batch"] for f in done} == {len(NOTES)}
    assert "MiB of KV cache each" in done[0]["decode_batch_rule"]

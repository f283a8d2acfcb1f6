"""A text-generation pipeline stage through the engine: a job's files decoded together
give the texts that generate() gives each file alone (tiny model, float32, CPU)."""

from __future__ import annotations

import pytest
from localbench.engine.inference import Engine, Request
from localbench.pipelines.batch import BatchItem, FileRun, batch_size_of, run_stage_batch
from localbench.pipelines.stages import FileRequests

NOTES = [
    "Buy milk and eggs on the way home.",
    "The meeting moved to Thursday at ten, in the small room by the stairs.",
    "Call the plumber.",
    "A long walk by the river, then tea at the old mill, then home before the rain came.",
    "",
]


def _stage(tiny_qwen, tmp_path, notes=NOTES, **stage):
    settings, manifest, folder = tiny_qwen
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


@pytest.fixture(scope="module")
def alone(tiny_qwen, tmp_path_factory):
    """The reference: each file alone through eager generate() (batch 1)."""
    return _stage(tiny_qwen, tmp_path_factory.mktemp("alone"), backend="eager", decode_batch=1)


@pytest.mark.parametrize(
    ("backend", "decode_batch"), [("fast", 2), ("fast", None), ("eager", None)]
)
def test_batched_stage_texts_equal_each_file_alone(
    tiny_qwen, alone, tmp_path, backend, decode_batch
):
    stage = {"backend": backend, **({"decode_batch": decode_batch} if decode_batch else {})}
    record = _stage(tiny_qwen, tmp_path, **stage)
    assert record["backend"] == backend and record["backend_note"] is None
    assert {f["decode_batch"] for f in alone["files"]} == {1}
    for before, after in zip(alone["files"], record["files"], strict=True):
        assert before["name"] == after["name"]
        assert (before["status"], after["status"]) == ("done", "done"), (before, after)
        assert after["text"] == before["text"] and after["new_tokens"] == before["new_tokens"]
        assert after["prompt_tokens"] == before["prompt_tokens"]
        assert after["backend"] == backend
        assert 0 < after["first_token_s"] <= after["latency_s"]
        if decode_batch:
            assert after["decode_batch"] <= decode_batch
            assert after["decode_batch_rule"] == f"decode_batch: {decode_batch} in the stage"
        else:  # every file of the job in one batch, and why
            assert after["decode_batch"] == len(NOTES)
            assert "MiB of KV cache each" in after["decode_batch_rule"]
    assert record["inference_s"] > 0 and record["load_s"] > 0


@pytest.mark.parametrize("backend", ["fast", "eager"])
def test_an_unreadable_file_or_a_prompt_too_long_fails_alone(tiny_qwen, tmp_path, backend):
    # 20,000 words are about 40,000 tokens, more than the model's context (32,768).
    notes = [*NOTES, b"\xff\xfe not UTF-8", "word " * 20_000]
    record = _stage(tiny_qwen, tmp_path, notes=notes, backend=backend, decode_batch=2)
    *done, unreadable, too_long = record["files"]
    assert [f["status"] for f in done] == ["done"] * len(NOTES)
    assert unreadable["status"] == "failed" and "not UTF-8" in unreadable["reason"]
    # Its batch failed, then ran one request at a time: its partner is done.
    assert too_long["status"] == "failed" and "at most 32768" in too_long["reason"]
    assert "\n" not in too_long["reason"]
    for index in (len(NOTES), len(NOTES) + 1):
        assert (tmp_path / f"out-{index}.md").read_text().startswith("FAILED: ")


def test_a_request_the_engine_refuses_to_size_fails_its_file_alone(tiny_checkpoint_model):
    engine = Engine(tiny_checkpoint_model("Qwen/Qwen2.5-1.5B-Instruct"), "eager")
    runs = [
        FileRun(BatchItem(name, "", ""), FileRequests([request]))
        for name, request in (
            ("a", Request(text="Hi")),
            ("empty", Request(prompt_ids=[])),
            ("b", Request(text="Hello there")),
        )
    ]
    assert batch_size_of(engine, [(run, 0) for run in runs], 8, None) == 2
    assert [run.reason for run in runs[::2]] == [None, None]
    assert "the prompt is empty" in runs[1].reason

"""Peer engines' records beside this run's results: found safely, read strictly, shown
labelled as peers with their roofline share and our fast backend's ratios."""

from __future__ import annotations

import json
import os

from localbench.report.peers import find_records, load_records, peer_table
from localbench.report.summary import render_summary, summary_context

QWEN = "qwen2.5-1.5b-instruct"


def _record(**overrides):
    record = {
        "engine": "llama.cpp",
        "peer": True,
        "model": QWEN,
        "threads": 2,
        "measured_at": "2026-12-03T04:00:00Z",
        "rows": [
            {
                "weights": "BF16",
                "status": "measured",
                "file_bytes": 3_000_000_000,
                "n_threads": 2,
                "decode_tokens_per_s": {"mean": 4.0, "stddev": 0.1},
                "prompt_tokens_per_s": {"mean": 40.0, "stddev": 1.0},
            },
            {
                "weights": "Q4_K_M",
                "status": "measured",
                "file_bytes": 1_000_000_000,
                "decode_tokens_per_s": {"mean": 12.0, "stddev": 0.2},
                "prompt_tokens_per_s": {"mean": 90.0, "stddev": 1.0},
            },
            {"weights": "Q8_0", "status": "failed", "reason": "llama-quantize <crashed>"},
        ],
    }
    record.update(overrides)
    return record


def _measurement(median):
    return {"median": median, "p90": median, "cv": 0.01}


def _result(backend, decode, prefill, dtype="bfloat16"):
    return {
        "model": QWEN,
        "status": "measured",
        "repo": "Qwen/Qwen2.5-1.5B-Instruct",
        "task": "text-generation",
        "backend_requested": backend,
        "backend": {"used": backend},
        "dtype": dtype,
        "torch_threads": 2,
        "roofline": {"tokens_per_s": 6.0, "decode_percent_of_roofline": 100 * decode / 6.0},
        "metrics": {
            "load_s": 1.0,
            "decode_tokens_per_s": _measurement(decode),
            "prefill_tokens_per_s": _measurement(prefill),
            "ttft_ms": _measurement(100.0),
        },
    }


def test_records_are_found_as_regular_files_only(tmp_path):
    folder = tmp_path / "peers" / "llama.cpp"
    folder.mkdir(parents=True)
    (folder / f"{QWEN}.json").write_text(json.dumps(_record()))
    (folder / "notes.txt").write_text("not a record")
    (folder / "linked.json").symlink_to(folder / f"{QWEN}.json")
    os.mkfifo(folder / "fifo.json")
    (folder / "dir.json").mkdir()
    (folder / "{braces}.json").write_text("{}")
    (tmp_path / "peers" / "stray.json").write_text("{}")  # not under an engine's folder
    assert find_records(tmp_path) == [str(folder / f"{QWEN}.json")]
    assert find_records(tmp_path / "missing") == []


def test_unreadable_records_are_left_out_with_a_reason(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_record()))
    cases = {
        "broken.json": "{not json",
        "list.json": "[1, 2]",
        "rows.json": json.dumps({"rows": "x"}),
        "row.json": json.dumps({"rows": [1]}),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1.json").write_bytes(b'{"model": "\xe9"}')
    (tmp_path / "huge.json").write_text(" " * (2**20 + 1))
    paths = [str(good), *(str(tmp_path / n) for n in [*cases, "latin1.json", "huge.json"])]
    records, skipped = load_records([*paths, str(tmp_path / "gone.json")])
    assert [r["model"] for r in records] == [QWEN]
    assert len(skipped) == 7
    assert all(line.split(":")[0].endswith(".json") for line in skipped)
    assert any("bytes, expected at most" in line for line in skipped)


def test_peer_rows_carry_the_roofline_share_and_the_fast_ratios():
    from localbench.report.summary import model_row

    rows = [model_row(_result("eager", 2.0, 6.0)), model_row(_result("fast", 5.0, 30.0))]
    table = peer_table([_record()], rows, bandwidth_gb_per_s=20.0)
    engines = [t["engine"] for t in table]
    assert engines == [
        "localbench eager",
        "localbench fast",
        "llama.cpp (peer)",
        "llama.cpp (peer)",
        "llama.cpp (peer)",
    ]
    bf16, q4, q8 = table[2:]
    assert bf16["percent"] == 100 * 4.0 / (20.0e9 / 3e9)  # 60%
    assert bf16["fast_decode_ratio"] == 5.0 / 4.0 and bf16["fast_prompt_ratio"] == 30.0 / 40.0
    # Quantized rows hold other weights: no ratio to our bfloat16 run.
    assert "fast_decode_ratio" not in q4 and q4["percent"] == 100 * 12.0 / 20.0
    assert q8["decode"] is None and q8["note"].startswith("not measured: llama-quantize")
    # Without our fast row, or without a bandwidth, those cells stay empty.
    alone = peer_table([_record()], rows[:1], bandwidth_gb_per_s=None)
    assert all(t.get("percent") is None for t in alone if t["peer"])
    assert not any("fast_decode_ratio" in t for t in alone)


def test_bad_numbers_in_a_record_are_not_shown():
    record = _record(
        rows=[
            {"weights": "BF16", "status": "measured", "file_bytes": -1,
             "decode_tokens_per_s": {"mean": float("inf")}, "prompt_tokens_per_s": {"mean": True}},
        ]
    )  # fmt: skip
    (row,) = peer_table([record], [], 20.0)
    assert row["decode"] is None and row["prompt"] is None and row["percent"] is None


def test_summary_shows_peers_labelled_and_escaped():
    hardware = {
        "chip": "cpu", "cpu_logical_cores": 2, "memory_bytes": 2**30, "platform": "linux",
        "python": "3.11", "torch": "2.13", "accelerator": "cpu", "transformers": "5",
        "profile": "p",
    }  # fmt: skip
    warmup = {
        "init_s": 0.1, "matmul_size": 8, "first_matmul_s": 0.1, "dtype": "float32",
        "copy_bandwidth_gb_per_s": {"median": 20.0}, "matmul_tflops": {"median": 1.0},
    }  # fmt: skip
    results = [_result("eager", 2.0, 6.0), _result("fast", 5.0, 30.0)]
    summary = render_summary(summary_context(results, hardware, warmup, [_record()]))
    assert "### Beside a peer engine on this machine" in summary
    assert (
        "| qwen2.5-1.5b-instruct | llama.cpp (peer) | BF16 | 2 | 4.00 | 40.0 | 60% | 1.25x, 0.75x |"
        in (summary)
    )
    assert "llama-quantize &lt;crashed&gt;" in summary
    without = render_summary(summary_context(results, hardware, warmup))
    assert "peer engine" not in without

"""Batched decoding (the throughput scenario) through the real snakemake command line."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from test_reruns import planned_jobs

MODEL = "qwen2.5-1.5b-instruct"


def _points(results_dir):
    """Throughput records keyed by (backend, batch size)."""
    records = {}
    for path in sorted((results_dir / "throughput" / MODEL).glob("*/batch-*.json")):
        record = json.loads(path.read_text())
        records[(path.parent.name, int(path.stem.split("-")[1]))] = record
    return records


def test_every_backend_and_batch_size_is_its_own_measured_point(tiny_run):
    config = yaml.safe_load((tiny_run.parent.parent / "config.yaml").read_text())
    sizes = config["models"][MODEL]["throughput"]["batch_sizes"]
    points = _points(tiny_run)
    assert set(points) == {(b, n) for b in ("eager", "fast") for n in sizes}
    for (backend, batch), record in points.items():
        assert record["status"] == "measured", record.get("reason")
        assert record["backend"]["used"] == backend
        assert record["inputs"]["batch_size"] == batch
        assert record["synthetic"] is True
        metrics = record["metrics"]
        aggregate = metrics["aggregate_tokens_per_s"]["median"]
        sequence = metrics["sequence_tokens_per_s"]["median"]
        assert aggregate == pytest.approx(sequence * batch)
        assert 0 < record["limit"]["percent_of_limit"]
        # Every sequence of the batch got the same prompt, so the same greedy tokens,
        # and those are what the batch of one and the other backend produced.
        assert record["same_tokens_in_every_sequence"] is True
        assert record["generated_token_ids"] == points[("eager", 1)]["generated_token_ids"]
    summary = (tiny_run / "SUMMARY.md").read_text()
    section = summary.split("### What batching buys")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| Qwen 2.5 1.5B")]
    assert len(rows) == len(points)
    assert all("(synthetic)" in row for row in rows)
    # The chart of the points, linked under the table.
    chart = tiny_run / "charts" / "throughput.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    assert "](charts/throughput.png)" in section
    svg = (tiny_run / "charts" / "throughput.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_throughput_chart_draws_measured_points_only(tmp_path):
    """A failed point draws no line and no number; the measured points of each model and
    backend are one line, with the bandwidth limit beside them."""
    from localbench.report.charts import render_throughput_chart

    def point(backend, batch, status="measured", rate=100.0):
        record = {"model": MODEL, "status": status, "synthetic": True}
        if status == "measured":
            record |= {
                "inputs": {"batch_size": batch},
                "backend": {"used": backend},
                "metrics": {"aggregate_tokens_per_s": {"median": rate * batch}},
                "limit": {"tokens_per_s": 1000.0 * batch},
            }
        return record

    records = [point("fast", 1), point("fast", 4), point("eager", 4, status="failed")]
    written = render_throughput_chart(records, {MODEL: "Qwen 2.5 1.5B"}, "test", tmp_path)
    svg = (tmp_path / "throughput.svg").read_text()
    assert [p.name for p in written] == ["throughput.png", "throughput.svg"]
    assert "fast" in svg and "eager" not in svg  # the legend names only drawn lines


def test_adding_a_batch_size_measures_only_the_new_points(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run.parent.parent, workdir, symlinks=True)
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["models"][MODEL]["throughput"]["batch_sizes"].append(3)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_jobs(workdir) == {
        "benchmark_throughput": 2,  # batch 3, eager and fast; no other point
        "render_throughput_chart": 1,
        "render_summary": 1,
        "report": 1,
    }
    # Its run lengths are the points' own settings: changing them remeasures every point
    # of that model, and nothing else.
    config["models"][MODEL]["throughput"]["new_tokens"] = 8
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = planned_jobs(workdir)
    assert jobs["benchmark_throughput"] == 2 * 5
    assert "benchmark_model" not in jobs and "fetch_model" not in jobs

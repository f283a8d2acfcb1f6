"""The whole benchmark DAG through the real snakemake command line, on tiny models."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, TWO_JOBS, snakemake
from localbench.report.summary import md

SEED_MODELS = [
    "deepseek-r1-distill-qwen-1.5b",
    "qwen2.5-1.5b-instruct",
    "llama-3.2-3b-instruct",
    "blip-base",
    "blip2-opt-2.7b",
    "deepseek-vl2-small",
    "whisper-base",
]


# The seed report's names, which the summary, charts and HTML report show.
DISPLAY_NAMES = {
    "deepseek-r1-distill-qwen-1.5b": "DeepSeek-R1-Distill-Qwen 1.5B",
    "qwen2.5-1.5b-instruct": "Qwen 2.5 1.5B",
    "llama-3.2-3b-instruct": "Llama 3.2 3B",
    "blip-base": "BLIP base",
    "blip2-opt-2.7b": "BLIP-2 2.7B",
    "deepseek-vl2-small": "DeepSeek-VL2-Small",
    "whisper-base": "Whisper base",
}
TASKS = [
    "text-generation", "image-captioning", "visual-question-answering", "multimodal",
    "speech-recognition",
]  # fmt: skip
# The shipped config measures Qwen2.5's throughput (both backends, its batch sizes): the
# summary adds their chart and the HTML report their result files.
_SHIPPED = yaml.safe_load((Path(__file__).resolve().parent.parent / "config.yaml").read_text())
_QWEN = _SHIPPED["models"]["qwen2.5-1.5b-instruct"]
THROUGHPUT_POINTS = len(_QWEN["backend"]) * len(_QWEN["throughput"]["batch_sizes"])
CHARTS = [f"speed-{task}" for task in TASKS] + ["peak-memory", "decode-roofline", "throughput"]
TEXT_MODELS = SEED_MODELS[:3]
FAST_MODELS = [m for m in SEED_MODELS if m != "deepseek-vl2-small"]  # both backends


def _results(results_dir: Path, backend: str = "eager") -> dict[str, dict]:
    """Result records of one backend, keyed by model."""
    paths = sorted((results_dir / "benchmarks").glob(f"*/{backend}.json"))
    return {p.parent.name: json.loads(p.read_text()) for p in paths}


def test_every_seed_model_has_a_result_with_a_status(tiny_run):
    results = _results(tiny_run)
    assert sorted(results) == sorted(SEED_MODELS)
    statuses = {name: r["status"] for name, r in results.items()}
    assert set(statuses.values()) == {"measured"}, statuses


def test_measured_results_follow_the_method(tiny_run):
    results = _results(tiny_run)
    text = results["qwen2.5-1.5b-instruct"]
    bench = text["settings"]["benchmark"]
    metrics = text["metrics"]
    assert metrics["decode_tokens_per_s"]["count"] == bench["repetitions"]
    assert len(metrics["ttft_ms"]["values"]) == bench["repetitions"]
    # Every run generated exactly the forced number of tokens.
    assert metrics["tokens_generated"]["values"] == [bench["new_tokens"]] * bench["repetitions"]
    # Inter-token gaps exclude the first token: new_tokens - 1 gaps per run.
    assert (
        metrics["inter_token_latency_ms"]["count"]
        == (bench["new_tokens"] - 1) * bench["repetitions"]
    )
    assert metrics["load_s"] > 0
    assert text["memory"]["peak_bytes"] > 0
    assert text["synthetic"] is True and text["manifest"]["synthetic"] is True
    assert text["environment"]["hardware"]["profile"] == "test-machine"
    assert text["method"]["decode_rate"].startswith("(tokens - 1)")
    assert results["whisper-base"]["metrics"]["real_time_factor"]["median"] > 0
    assert results["blip-base"]["metrics"]["images_per_s"]["median"] > 0
    assert results["blip2-opt-2.7b"]["inputs"]["prompt"] == (
        "Question: What is shown in this picture? Answer:"
    )
    # DeepSeek-VL2: a 640x480 image takes 2x2 tiles plus the global view, 1,023 tokens.
    vl2 = results["deepseek-vl2-small"]
    assert vl2["inputs"]["tiling"] == [2, 2] and vl2["inputs"]["image_tokens"] == 1023
    assert vl2["inputs"]["prompt_tokens"] > 1023
    for metric in ("prefill_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "ttft_ms"):
        assert vl2["metrics"][metric]["count"] == bench["repetitions"], metric
    assert (
        vl2["metrics"]["tokens_generated"]["values"] == [bench["new_tokens"]] * bench["repetitions"]
    )
    assert vl2["memory"]["peak_bytes"] > 0 and vl2["synthetic"] is True


def test_fast_backend_models_are_measured_with_both_backends(tiny_run):
    fast = _results(tiny_run, "fast")
    eager = _results(tiny_run)
    assert sorted(fast) == sorted(FAST_MODELS)
    for name in FAST_MODELS:
        assert fast[name]["status"] == "measured"
        assert fast[name]["backend"]["used"] == "fast"
        assert fast[name]["backend"]["cuda_graph"] is False  # no GPU here
        # Same input, greedy: the fast decoder's tokens are eager's tokens.
        assert fast[name]["generated_token_ids"] == eager[name]["generated_token_ids"]
    assert fast["whisper-base"]["metrics"]["real_time_factor"]["median"] > 0
    for name in TEXT_MODELS:
        assert fast[name]["roofline"]["tokens_per_s"] > 0
        assert fast[name]["roofline"]["decode_percent_of_roofline"] > 0


def test_csv_has_one_row_per_model_and_backend_from_the_result_files(tiny_run):
    with open(tiny_run / "benchmarks.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(SEED_MODELS) + len(FAST_MODELS)
    rows = {row["model"]: row for row in table if row["backend"] == "eager"}
    assert sorted(rows) == sorted(SEED_MODELS)
    qwen = _results(tiny_run)["qwen2.5-1.5b-instruct"]
    assert float(rows["qwen2.5-1.5b-instruct"]["decode_tokens_per_s_median"]) == pytest.approx(
        qwen["metrics"]["decode_tokens_per_s"]["median"]
    )
    vl2 = _results(tiny_run)["deepseek-vl2-small"]
    assert rows["deepseek-vl2-small"]["status"] == "measured"
    assert float(rows["deepseek-vl2-small"]["decode_tokens_per_s_median"]) == pytest.approx(
        vl2["metrics"]["decode_tokens_per_s"]["median"]
    )


def test_summary_has_the_seed_report_sections_and_every_model(tiny_run):
    summary = (tiny_run / "SUMMARY.md").read_text()
    for heading in [
        "# Benchmark Results Summary",
        "**Hardware**",
        "**Platform**",
        "**Backend**",
        "## Executive Summary",
        "### Text Generation Models",
        "### Vision-Language Models",
        "### Speech Recognition",
        "**Key Findings:**",
        "## Resource Utilization",
        "### Storage Requirements",
        "## Recommendations",
        "### For 16 GB machines",
        "### For 24 GB machines",
        "### For 32+ GB machines",
        "## Skipped, Failed and Pending Models",
        "## Method and Environment",
    ]:
        assert heading in summary, heading
    assert "synthetic weights" in summary
    table_rows = [line for line in summary.splitlines() if line.startswith("| **")]
    assert len(table_rows) == len(SEED_MODELS) + len(FAST_MODELS)
    assert "### Eager against fast" in summary
    for name in FAST_MODELS:
        shown = DISPLAY_NAMES[name]
        comparison = [line for line in summary.splitlines() if line.startswith(f"| {shown} |")]
        assert len(comparison) == 1 and "yes, all" in comparison[0], name
    for line in table_rows:
        assert "synthetic (random weights)" in line
    # Each detail row: the seed report's name, then the config key and the repo.
    for name in SEED_MODELS:
        repo = _results(tiny_run)[name]["repo"]
        assert f"| **{DISPLAY_NAMES[name]}** | {name} | {repo} |" in summary, name
    # A figure in the summary is the one in the result file.
    qwen = _results(tiny_run)["qwen2.5-1.5b-instruct"]
    assert f"{qwen['metrics']['decode_tokens_per_s']['median']:.1f}" in summary
    # One chart per task, memory and the roofline, each linked and drawn in both formats.
    for chart in CHARTS:
        assert f"](charts/{chart}.png)" in summary, chart
        assert (tiny_run / "charts" / f"{chart}.png").read_bytes().startswith(b"\x89PNG")
        assert (tiny_run / "charts" / f"{chart}.svg").read_bytes().startswith(b"<?xml")
    assert sorted(p.stem for p in (tiny_run / "charts").glob("*.png")) == sorted(CHARTS)
    assert not (tiny_run / "chart.svg").exists()


def _report_variable(html: str, name: str) -> dict:
    """One of the JSON objects a Snakemake HTML report holds (``var results = {...};``)."""
    match = re.search(rf"^\s*var {name} = (\{{.*?\}});$", html, re.S | re.M)
    assert match, name
    return json.loads(match.group(1))


def _decoded(entry: dict) -> bytes:
    """The file a report result embeds as a data URI."""
    return base64.b64decode(entry["data_uri"].split(";base64,", 1)[1])


def test_html_report_holds_summary_charts_results_comparison_and_provenance(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run.parent.parent, workdir, symlinks=True)
    snakemake(workdir, "--cores", "1", "compare", *TINY)
    report = workdir / "results" / "test-machine" / "report.html"
    snakemake(workdir, "--cores", "1", "--report", str(report), "html_report", *TINY)
    html = report.read_text(encoding="utf-8")
    results = _report_variable(html, "results")
    categories = _report_variable(html, "categories")
    assert sorted(categories) == [
        "1. Summary", "2. Charts", "3. Model results", "4. Machine", "5. Comparison",
    ]  # fmt: skip
    by_name = {Path(path).name: entry for path, entry in results.items()}
    # The summary page: every table and every chart, in the seed report's names.
    page = _decoded(by_name["SUMMARY.html"]).decode()
    assert by_name["SUMMARY.html"]["mime_type"] == "text/html"
    for name in SEED_MODELS:
        assert f"<strong>{DISPLAY_NAMES[name]}</strong>" in page, name
    assert page.count('src="data:image/png;base64,') == len(CHARTS)
    assert page.count("<table>") >= 5
    # The charts, one entry each, embedded as PNG.
    for chart in CHARTS:
        entry = by_name[f"{chart}.png"]
        assert entry["mime_type"] == "image/png" and _decoded(entry).startswith(b"\x89PNG")
    # Every result file, under its model's display name.
    assert sorted(categories["3. Model results"]) == sorted(DISPLAY_NAMES.values())
    files = [path for paths in categories["3. Model results"].values() for path in paths]
    assert len(files) == len(SEED_MODELS) + len(FAST_MODELS) + THROUGHPUT_POINTS
    qwen = json.loads(
        _decoded(results[f"results/test-machine/benchmarks/{SEED_MODELS[1]}/fast.json"])
    )
    assert qwen == _results(tiny_run, "fast")[SEED_MODELS[1]]
    assert "Comparison across machines" in _decoded(by_name["COMPARISON.html"]).decode()
    # Snakemake's own provenance: the rules and the workflow's description.
    assert {"render_charts", "render_summary", "benchmark_model"} <= set(
        _report_variable(html, "rules")
    )
    assert "how fast local AI models run on this machine" in html


def test_energy_is_measured_or_not_available_with_its_reason(tiny_run):
    """On this project's VM no counter can be read: every result and the summary say
    so, with the reason; where one can, every measured result has its joules."""
    from localbench.measure.energy import EnergyUnavailable, energy_counter

    try:
        energy_counter(torch.device("cpu"))
        reason = None
    except EnergyUnavailable as error:
        reason = str(error)
    warmup = json.loads((tiny_run / "warmup.json").read_text())
    summary = (tiny_run / "SUMMARY.md").read_text()
    for backend in ("eager", "fast"):
        for name, result in _results(tiny_run, backend).items():
            energy = result["energy"]
            if reason is None:
                assert energy["status"] == "measured" and energy["joules"] >= 0, name
            else:
                assert energy == {"status": "not available", "reason": reason}, name
    if reason is not None:
        assert warmup["energy"] == {"status": "not available", "reason": reason}
        assert f"Energy: not available: {md(reason)}." in summary
    else:
        assert warmup["energy"]["idle_watts"] >= 0 and "Joules per token" in summary


def test_benchmark_logs_show_each_run_with_the_speed_so_far(tiny_run):
    bench = _results(tiny_run)["qwen2.5-1.5b-instruct"]["settings"]["benchmark"]
    for backend in ("eager", "fast"):
        log = tiny_run / "logs" / "benchmark_model" / "qwen2.5-1.5b-instruct" / f"{backend}.log"
        lines = [line for line in log.read_text().splitlines() if " run " in line]
        label = f"qwen2.5-1.5b-instruct ({backend})"
        assert lines[0].startswith(f"{label}: warm-up run 1 of {bench['warmup_runs']}: ")
        measured = lines[bench["warmup_runs"] :]
        assert len(measured) == bench["repetitions"]
        for index, line in enumerate(measured, start=1):
            assert line.startswith(f"{label}: run {index} of {bench['repetitions']}: ")
            assert "tokens/s" in line and "median so far" in line
            assert "\r" not in line


def test_nothing_left_to_do_after_a_run(tiny_run):
    workdir = tiny_run.parent.parent
    dry = snakemake(workdir, "-n", "report", *TINY)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_models_that_do_not_fit_are_skipped_and_the_summary_still_renders(tiny_run, tmp_path):
    # A copy of the tiny run (models fetched, device warmed up) with two of its models:
    # the new headroom reruns their benchmark jobs, which now find neither fits.
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run.parent.parent, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    kept = ("blip-base", "whisper-base")
    config["models"] = {name: config["models"][name] for name in kept}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(
        workdir,
        *TWO_JOBS, "report", *TINY, "memory_headroom_gb=100000",
    )  # fmt: skip
    results = _results(workdir / "results" / "test-machine")
    for name in kept:
        assert results[name]["status"] == "skipped", name
        assert results[name]["reason"].startswith("needs ~100")
    summary = (workdir / "results" / "test-machine" / "SUMMARY.md").read_text()
    assert "No measured model fits." in summary
    assert "0 of 2 configured models were measured" in summary


def test_a_failing_model_does_not_cost_the_others_their_results(workdir):
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["models"] = {
        "whisper-base": config["models"]["whisper-base"],
        "mystery-model": {"task": "text-generation", "repo": "nobody/not-shipped"},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, *TWO_JOBS, "report", *TINY)
    results = _results(workdir / "results" / "test-machine")
    assert results["whisper-base"]["status"] == "measured"
    assert results["mystery-model"]["status"] == "failed"
    assert not (
        workdir / "results" / "test-machine" / "benchmarks" / "mystery-model" / "fast.json"
    ).exists()
    assert "nobody/not-shipped" in results["mystery-model"]["reason"]
    summary = (workdir / "results" / "test-machine" / "SUMMARY.md").read_text()
    assert "mystery-model" in summary and "failed" in summary


def test_a_bad_config_stops_the_run_with_one_clear_line(workdir):
    completed = snakemake(workdir, "-n", "report", "--config", "device=gpu", check=False)
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert (
        "invalid config: device: 'gpu' is not allowed; allowed values: auto, cuda, mps, cpu"
        in output
    )
    assert not (workdir / "results").exists()


def test_a_bad_display_name_stops_the_run_with_one_clear_line(workdir):
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["models"]["blip-base"]["display_name"] = "BLIP {base}"
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    completed = snakemake(workdir, "-n", "report", check=False)
    assert completed.returncode != 0
    lines = [
        line
        for line in (completed.stdout + completed.stderr).splitlines()
        if "invalid config" in line
    ]
    assert lines == [
        "invalid config: models.blip-base.display_name: 'BLIP {base}' does not match: a display "
        "name is 1 to 80 characters on one line: no control characters, no { or } (Snakemake "
        "reads them as wildcards), no spaces at either end"
    ]
    assert not (workdir / "results").exists()


def test_a_run_ends_when_its_last_job_does(workdir):
    # Snakemake's scheduler leaves a timer behind that would hold the process for the
    # whole --max-jobs-per-timespan timespan after the run (localbench.scheduler_timers):
    # an hour here, far past the limit given to this run of one short job.
    snakemake(
        workdir, "--cores", "1", *TINY, "--max-jobs-per-timespan", "100/3600s",
        "results/test-machine/hardware.json", timeout=300,
    )  # fmt: skip
    assert (workdir / "results" / "test-machine" / "hardware.json").is_file()


def test_workflow_passes_snakemake_lint(workdir):
    completed = snakemake(workdir, "--lint", check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr

"""Hostile names: every outside string reaches Markdown and HTML as literal text."""

from __future__ import annotations

import re

from localbench.pipelines.report import render_report, report_context
from localbench.summary import md, render_summary, summary_context


def test_md_is_one_line_of_literal_text_in_markdown_and_html():
    escaped = md("<script>x</script> & [a](b) | `c` *d*\n- e\r\x1b[31m")
    assert escaped == (
        "&lt;script&gt;x&lt;/script&gt; &amp; \\[a\\](b) \\| \\`c\\` \\*d\\* - e \ufffd\\[31m"
    )
    assert md("- item").startswith("\\-") and md("1. item") == "1\\. item"
    assert md("===") == "\\===" and md("---") == "\\---" and md("") == md(None) == ""
    assert md("test-machine") == "test-machine" and md(12.5) == "12.5" and md(-1) == "-1"


def test_pipeline_report_escapes_pipeline_stage_and_model_names():
    stages = [{"name": "cap<b>|x", "model": "m<i>"}, {"name": "sum*y*", "model": "m2"}]
    context = report_context(
        "pipe<script>", stages, {"folder": "in<put>", "rejected": []}, [], "prof|<x>"
    )
    report = render_report(context)
    for raw in ("<b>", "<i>", "<script>", "<x>", "<put>", "*y*"):
        assert raw not in report, raw
    assert not re.search(r"(?<!\\)\|x", report)
    assert "cap&lt;b&gt;\\|x (m&lt;i&gt;) → sum\\*y\\* (m2)" in report
    assert "| cap&lt;b&gt;\\|x | m&lt;i&gt; |" in report


def test_summary_escapes_names_from_the_config_and_the_results():
    result = {
        "model": "m<x>",
        "status": "failed",
        "reason": "<script>",
        "repo": "a/b",
        "task": "text-generation",
        "backend_requested": "fa<st>|",
        "dtype": "<b>",
        "settings": {"benchmark": {"prompt_tokens": "<p>", "new_tokens": 1}},
    }
    hardware = {
        "chip": "<chip>", "cpu_logical_cores": 2, "memory_bytes": 2**30, "platform": "<os>",
        "python": "<py>", "torch": "<torch>", "accelerator": "cpu", "transformers": "<tf>",
        "profile": "<profile>",
    }  # fmt: skip
    warmup = {
        "init_s": 0.1, "matmul_size": 8, "first_matmul_s": 0.1, "dtype": "<w>",
        "copy_bandwidth_gb_per_s": {"median": 1.0}, "matmul_tflops": {"median": 1.0},
    }  # fmt: skip
    summary = render_summary(summary_context([result], hardware, warmup))
    for raw in ("<x>", "<script>", "<st>", "<b>", "<p>", "<chip>", "<os>", "<py>", "<w>"):
        assert raw not in summary, raw
    assert "fa&lt;st&gt;\\|" in summary and "**Profile**: &lt;profile&gt;" in summary

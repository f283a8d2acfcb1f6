"""Snakemake script: render SUMMARY.md, and SUMMARY.html with its charts embedded, from
this run's result files."""

import os
import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import read_json, write_text
from localbench.logs import job_log
from localbench.report.aggregate import load_results
from localbench.report.chart_names import chart_links
from localbench.report.pages import html_page
from localbench.report.peers import load_records
from localbench.report.summary import render_summary, summary_context

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    inputs, output = snakemake.input, snakemake.output  # noqa: F821
    folder = Path(output.summary).parent
    peers, skipped = load_records(list(inputs.peers))
    for line in skipped:
        log.warning("peer record left out: %s", line)
    context = summary_context(
        load_results(inputs.results),
        read_json(inputs.hardware),
        read_json(inputs.warmup),
        peers,
        throughput_records=load_results(inputs.throughput),
        display_names=dict(snakemake.params.display_names),  # noqa: F821
        charts=chart_links(
            [
                Path(os.path.relpath(p, folder)).as_posix()
                for p in [*inputs.charts, *inputs.throughput_chart]
            ]
        ),
    )
    markdown = render_summary(context)
    write_text(output.summary, markdown)
    profile = context["hardware"].get("profile", folder.name)
    write_text(output.page, html_page(markdown, f"Benchmark summary: {profile}", folder))
    log.info("summary of %d models", len(context["rows"]))

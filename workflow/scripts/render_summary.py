"""Snakemake script: render SUMMARY.md and chart.svg from this run's result files."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.aggregate import load_results
from localbench.atomic import read_json, write_text
from localbench.chart import render_chart
from localbench.logs import job_log
from localbench.peers import load_records
from localbench.summary import render_summary, summary_context

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    inputs = snakemake.input  # noqa: F821
    peers, skipped = load_records(list(inputs.peers))
    for line in skipped:
        log.warning("peer record left out: %s", line)
    context = summary_context(
        load_results(inputs.results),
        read_json(inputs.hardware),
        read_json(inputs.warmup),
        peers,
        load_results(inputs.throughput),
    )
    write_text(snakemake.output.chart, render_chart(context["chart_rows"]))  # noqa: F821
    write_text(snakemake.output.summary, render_summary(context))  # noqa: F821
    log.info("summary of %d models", len(context["rows"]))

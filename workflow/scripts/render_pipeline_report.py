"""Snakemake script: a pipeline's REPORT.md (and REPORT.html) and its done/failed counts."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import read_json, write_json, write_text
from localbench.logs import job_log
from localbench.pipelines.report import render_report, report_context, summary_line
from localbench.report.pages import html_page

inputs = snakemake.input  # noqa: F821 - injected by Snakemake
outputs = snakemake.output  # noqa: F821
pipeline = snakemake.wildcards.pipeline  # noqa: F821

with job_log(snakemake.log[0]) as log:  # noqa: F821
    listing = read_json(inputs.inputs)
    context = report_context(
        pipeline,
        snakemake.params.stages,  # noqa: F821
        listing,
        [read_json(path) for path in inputs.records],
        snakemake.params.profile,  # noqa: F821
    )
    markdown = render_report(context)
    write_text(outputs.report, markdown)
    write_text(outputs.page, html_page(markdown, f"Pipeline {pipeline}"))
    line = summary_line(pipeline, context["counts"], listing["note"], outputs.report)
    write_json(outputs.counts, {**context["counts"], "line": line, "report": outputs.report})
    log.info(line)

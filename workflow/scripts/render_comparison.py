"""Snakemake script: render results/COMPARISON.md (and COMPARISON.html) from every
profile's results.

A table or archive that cannot be compared is listed under "Skipped archives" with its
reason, and the job still succeeds: one bad archive never costs the others.
"""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import write_text
from localbench.logs import job_log
from localbench.report.archive_reader import find_archives
from localbench.report.charts import render_comparison_chart
from localbench.report.compare import (
    comparison_context,
    gather,
    machine_histories,
    regressions,
    render_comparison,
)
from localbench.report.pages import html_page

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    inputs = snakemake.input  # noqa: F821
    # Listed again here rather than taken from the rule's inputs: the listing also names
    # what it refuses (symlinks, FIFOs), which never become inputs.
    archives, refused = find_archives(Path("archive"))
    tables = [Path(p) for p in inputs.tables]
    rows, skipped = gather(tables, archives, Path(inputs.seed))
    # Each current profile against its own earlier archives (read again, with their
    # result files); what gather() left out is not read twice.
    histories, left_out = machine_histories(tables, archives, refused + skipped)
    context = comparison_context(
        rows,
        snakemake.params.baseline,  # noqa: F821
        refused + skipped + left_out,
        histories,
    )
    render_comparison_chart(context, snakemake.output.chart, snakemake.output.chart_svg)  # noqa: F821
    context["chart"] = Path(snakemake.output.chart).name  # noqa: F821 - beside COMPARISON.md
    write_text(snakemake.output[0], render_comparison(context))  # noqa: F821
    log.info("compared %d profiles", len(context["profiles"]))
    for entry in context["skipped"]:
        log.warning("skipped %s: %s", entry.path, entry.reason)
    flagged = regressions(histories)
    for line in flagged:
        log.warning("regression: %s", line)
    if flagged:
        print(
            f"compare: {len(flagged)} regression(s) against earlier archives of the same "
            f"profile: {'; '.join(flagged)}; see {snakemake.output[0]}",  # noqa: F821
            file=sys.__stderr__,
        )
    if context["skipped"]:
        print(
            f"compare: {len(context['skipped'])} archive(s) skipped, listed in "
            f"{snakemake.output[0]}",  # noqa: F821
            file=sys.__stderr__,
        )
    # The comparison just written, as a page of the HTML report.
    comparison = Path(snakemake.output[0])  # noqa: F821
    write_text(
        snakemake.output.page,  # noqa: F821
        html_page(
            comparison.read_text(encoding="utf-8"),
            "Comparison across machines",
            comparison.parent,
        ),
    )

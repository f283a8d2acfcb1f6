"""Snakemake script: draw the throughput chart (PNG and SVG) from the throughput points."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.logs import job_log
from localbench.report.aggregate import load_results
from localbench.report.charts import render_throughput_chart

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    params = snakemake.params  # noqa: F821
    folder = Path(snakemake.output.png).parent  # noqa: F821
    written = render_throughput_chart(
        load_results(snakemake.input.throughput),  # noqa: F821
        dict(params.display_names),
        params.profile,
        folder,
    )
    log.info("%d chart files in %s", len(written), folder)

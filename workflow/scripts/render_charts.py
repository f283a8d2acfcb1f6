"""Snakemake script: draw the charts (PNG and SVG) from this run's result files."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.logs import job_log
from localbench.report.aggregate import load_results
from localbench.report.charts import render_charts

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    params = snakemake.params  # noqa: F821
    folder = Path(snakemake.output.png[0]).parent  # noqa: F821
    written = render_charts(
        load_results(snakemake.input.results),  # noqa: F821
        dict(params.display_names),
        params.profile,
        params.tasks,
        folder,
    )
    expected = {str(Path(p)) for p in [*snakemake.output.png, *snakemake.output.svg]}  # noqa: F821
    missing = expected - {str(p) for p in written}
    if missing:
        raise RuntimeError(f"charts not drawn: {', '.join(sorted(missing))}")
    log.info("%d chart files in %s", len(written), folder)

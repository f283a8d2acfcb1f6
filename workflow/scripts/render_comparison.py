"""Snakemake script: render results/COMPARISON.md from every profile's results."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import write_text
from localbench.compare import comparison_context, gather, render_comparison
from localbench.logs import job_log

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    inputs = snakemake.input  # noqa: F821
    rows = gather(
        [Path(p) for p in inputs.tables], [Path(p) for p in inputs.archives], Path(inputs.seed)
    )
    context = comparison_context(rows, snakemake.params.baseline)  # noqa: F821
    write_text(snakemake.output[0], render_comparison(context))  # noqa: F821
    log.info("compared %d profiles", len(context["profiles"]))

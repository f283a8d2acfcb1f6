"""Snakemake script: gather every result file into benchmarks.csv."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import write_text
from localbench.logs import job_log
from localbench.report.aggregate import load_results, results_table

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    table = results_table(load_results(snakemake.input.results))  # noqa: F821
    log.info("%d rows", len(table))
    write_text(snakemake.output[0], table.to_csv(index=False))  # noqa: F821

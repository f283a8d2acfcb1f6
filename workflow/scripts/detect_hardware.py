"""Snakemake script: write the hardware and software record of this machine."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import write_json
from localbench.logs import job_log
from localbench.measure.hardware import detect

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    record = detect(snakemake.params.device)  # noqa: F821
    record["profile"] = snakemake.params.profile  # noqa: F821
    log.info("hardware: %s", record)
    write_json(snakemake.output[0], record)  # noqa: F821

"""Snakemake script: write the hardware and software record of this machine."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import write_json
from localbench.logs import job_log
from localbench.measure.hardware import detect
from localbench.measure.hardware_cache import check_planned_profile, remember

params = snakemake.params  # noqa: F821 - injected by Snakemake
with job_log(snakemake.log[0]) as log:  # noqa: F821
    record = detect(params.device)
    # The parse's answer may have been remembered: refresh it, then hold the run to it.
    remember(params.device, record)
    check_planned_profile(record, params.profile, params.configured_profile, params.tiny)
    record["profile"] = params.profile
    log.info("hardware: %s", record)
    write_json(snakemake.output[0], record)  # noqa: F821

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
# Read from the config, not params: a params change would rerun every job after this one.
config = snakemake.config  # noqa: F821
with job_log(snakemake.log[0]) as log:  # noqa: F821
    record = detect(params.device)
    # The parse's answer may have been remembered: refresh it, then hold the run to it.
    remember(params.device, record)
    check_planned_profile(record, params.profile, config.get("profile"), config["size"])
    record["profile"] = params.profile
    log.info("hardware: %s", record)
    write_json(snakemake.output[0], record)  # noqa: F821

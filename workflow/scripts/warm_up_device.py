"""Snakemake script: initialise the device and record what it costs and can do."""
# ruff: noqa: E402 - OpenMP's thread count is set before torch is imported

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.engine.threads import start_openmp_with

params = snakemake.params  # noqa: F821 - injected by Snakemake
start_openmp_with(params.threads, params.device)

from localbench.atomic import write_json
from localbench.engine.device import resolve_device, resolve_dtype
from localbench.logs import exit_without_teardown, job_log
from localbench.measure.warmup import warm_up

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    device = resolve_device(params.device)
    dtype, _why = resolve_dtype("auto", device)
    record = warm_up(device, dtype, params.threads)
    log.info("warm-up: %s", record)
    write_json(snakemake.output[0], record)  # noqa: F821

# Record written, log closed: nothing is left to do but free memory.
exit_without_teardown()

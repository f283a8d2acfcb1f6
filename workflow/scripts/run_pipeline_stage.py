"""Snakemake script: one pipeline stage over one batch of files (the model loaded once),
run by the run's stage worker where it takes the job (localbench.pipelines.worker), else
here."""
# ruff: noqa: E402 - the clock starts, and OpenMP's thread count is set, before torch is imported

import sys
import time
from pathlib import Path

SCRIPT_STARTED = time.perf_counter()  # before the library's imports

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import read_json
from localbench.config import resolve_threads
from localbench.engine.threads import start_openmp_with
from localbench.logs import exit_without_teardown, startup_seconds
from localbench.pipelines import worker
from localbench.pipelines.job import BatchJob, run_job

inputs = snakemake.input  # noqa: F821 - injected by Snakemake
params = snakemake.params  # noqa: F821
job = BatchJob(
    settings=inputs.settings,
    manifest=inputs.manifest,
    batch=params.batch,
    names=list(params.names),
    sources=list(inputs.sources),
    outputs=list(snakemake.output.outputs),  # noqa: F821
    questions=list(params.questions),
    previous=inputs.previous[0] if inputs.previous else None,
    reuse=params.reuse,
    record=snakemake.output.record,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
    threads=resolve_threads(snakemake.config["threads"]),  # noqa: F821
)
device = read_json(job.settings)["model"]["device"]

not_used = None
mode = snakemake.config.get("pipeline_worker", "auto")  # noqa: F821
if worker.wanted(mode, device):
    answer, not_used = worker.hand_over(job, device, mode, startup_seconds(SCRIPT_STARTED))
    if answer is not None:
        sys.exit(worker.exit_status(answer))

# Here: torch, transformers and the model start in this process.
start_openmp_with(job.threads, device)
import localbench.pipelines.batch  # noqa: F401 - torch, transformers: the job's imports

run_job(
    job,
    startup_seconds(SCRIPT_STARTED),
    worker={"not_used": not_used} if not_used else None,
)
# Outputs and record written, log closed: nothing is left to do but free memory.
exit_without_teardown()

"""Snakemake script: one pipeline stage over one batch of files (the model loaded once)."""
# ruff: noqa: E402 - the clock starts, and OpenMP's thread count is set, before torch is imported

import sys
import time
from pathlib import Path

SCRIPT_STARTED = time.perf_counter()  # before the library's imports

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import read_json, write_json
from localbench.config import resolve_threads
from localbench.engine.threads import openmp_record, start_openmp_with

inputs = snakemake.input  # noqa: F821 - injected by Snakemake
settings = read_json(inputs.settings)
THREADS = start_openmp_with(
    resolve_threads(snakemake.config["threads"]),  # noqa: F821
    settings["model"]["device"],
)

from localbench.engine.caches import use_lasting_compile_caches
from localbench.engine.device import use_threads
from localbench.logs import exit_without_teardown, job_log, startup_seconds
from localbench.pipelines.batch import BatchItem, run_stage_batch
from localbench.status import DONE

# Read when torch first compiles, not at import: compiled kernels and autotuning results
# last across jobs (localbench.engine.caches).
compile_caches = use_lasting_compile_caches()
startup = startup_seconds(SCRIPT_STARTED)

outputs = snakemake.output  # noqa: F821
params = snakemake.params  # noqa: F821

with job_log(snakemake.log[0]) as log:  # noqa: F821
    threads = use_threads(THREADS)
    log.info("compile caches: %s", compile_caches)
    items = [
        BatchItem(name=name, source=source, output=output, questions=questions or None)
        for name, source, output, questions in zip(
            params.names, inputs.sources, outputs.outputs, params.questions, strict=True
        )
    ]
    record = run_stage_batch(
        settings,
        read_json(inputs.manifest),
        Path(inputs.manifest).parent,
        params.batch,
        items,
        previous_batch=inputs.previous[0] if inputs.previous else None,
        log=log,
        reuse_dir=params.reuse,
    )
    done = sum(1 for f in record["files"] if f["status"] == DONE)
    log.info(
        "%s batch %s: %d of %d files done (%d of them reused) on %d threads",
        settings["stage"], params.batch, done, len(items), record["reused"], threads,
    )  # fmt: skip
    record = {**record, "torch_threads": threads, **openmp_record(), "startup": startup}
    write_json(outputs.record, record)

# Outputs and record written, log closed: nothing is left to do but free memory.
exit_without_teardown()

"""Snakemake script: benchmark one model and write its result file."""
# ruff: noqa: E402 - OpenMP's thread count is set before torch is imported

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from localbench.atomic import read_json, write_json
from localbench.engine.threads import start_openmp_with

settings = read_json(snakemake.input.settings)  # noqa: F821 - injected by Snakemake
start_openmp_with(settings["threads"], settings["device"])

from localbench.engine.caches import use_lasting_compile_caches
from localbench.logs import exit_without_teardown, job_log
from localbench.measure.hardware import software_record
from localbench.measure.runner import run_benchmark
from localbench.results import FAILED, new_result, one_line

# Read when torch first compiles, not at import: compiled kernels and autotuning results
# last across jobs (localbench.engine.caches).
compile_caches = use_lasting_compile_caches()

inputs = snakemake.input  # noqa: F821

with job_log(snakemake.log[0]) as log:  # noqa: F821
    log.info("compile caches: %s", compile_caches)
    manifest = read_json(inputs.manifest)
    environment = {
        "hardware": read_json(inputs.hardware),
        "warmup": read_json(inputs.warmup),
        # Read in this job: package versions and the commit as they are now.
        "software": software_record(),
    }
    try:
        result = run_benchmark(
            settings, manifest, Path(inputs.manifest).parent, environment, log=log
        )
    except Exception as error:  # noqa: BLE001 - one model's failure must not stop the others
        log.exception("benchmark of %s failed", settings["name"])
        result = new_result(settings, FAILED, one_line(error))
        result["manifest"] = manifest
        result["environment"] = environment
    log.info("status: %s %s", result["status"], result.get("reason") or "")
    write_json(snakemake.output[0], result)  # noqa: F821

# Result written, log closed: nothing is left to do but free memory.
exit_without_teardown()

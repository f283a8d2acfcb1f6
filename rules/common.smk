# Config validation, the hardware profile, paths and input functions.
# (The Snakefile puts workflow/, the localbench library, on sys.path.)
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from localbench.report import chart_names as lbcharts
from localbench import config as lbconfig
from localbench.report import names as lbnames
from localbench.report.archive_reader import find_archives
from localbench.config_files import check_config_file
from localbench.engine.device_choice import DeviceUnavailable
from localbench.measure.hardware_cache import detected as detected_hardware
from localbench.engine import threads as lbthreads
from localbench.engine import caches as lbcaches
from localbench.report.locate import RESULTS_ROOT, run_profile
from localbench.report import peers as lbpeers
from localbench.locks import clear_stale_locks
from localbench.scheduler_timers import cancel_scheduler_timers
from localbench.pipelines import plan as lbplan
from localbench.pipelines.plan import check_pipelines
from localbench.pipelines import worker as lbworker

try:
    # The files given with --configfile, read by Snakemake before this workflow ran: a
    # YTE template among them (its code has run) still stops the run here.
    for _file in workflow.configfiles:
        check_config_file(_file)
    lbconfig.check_config(config)
    lbnames.check_display_names(config)
    check_pipelines(config)
except lbconfig.ConfigError as error:
    raise WorkflowError(str(error)) from None
validate(config, schema=str(lbconfig.SCHEMA_PATH))

# A dry run writes nothing in the project: settings that would change are written aside
# (lbconfig.plan_without_writing), and jobs name the file they read with lbconfig.read_path.
if workflow.output_settings.dryrun:
    lbconfig.plan_without_writing()

# A run killed outright (SIGKILL, power loss) leaves Snakemake's lock behind; with no
# other run in this folder it is stale, and the next run starts instead of refusing.
if clear_stale_locks(Path.cwd()):
    print(
        "localbench: removed the lock of an earlier run that was killed",
        file=sys.stderr,
    )


try:
    # Detected from the hardware unless configured; "-tiny" for tiny models.
    PROFILE = run_profile(config)
    # Where the jobs run (config `device`, auto resolved as the jobs resolve it): jobs on
    # CUDA and MPS wait passively for OpenMP work (below). Both are remembered between
    # commands (localbench.measure.hardware_cache), and the detect_hardware job checks them.
    DEVICE_TYPE = detected_hardware(config["device"])["accelerator"]
except DeviceUnavailable as error:
    raise WorkflowError(str(error)) from None
# Jobs start OpenMP before importing torch, so they learn what auto resolved to here
# (localbench.engine.threads); a job on a cluster node parses this file there.
os.environ[lbthreads.DEVICE_TYPE_VARIABLE] = DEVICE_TYPE
RESULTS = f"{RESULTS_ROOT}/{PROFILE}"
# Jobs and the stage worker keep the bytecode of their imports where torch came without
# its own (localbench.engine.caches, config `bytecode_cache`): set before any starts.
lbcaches.use_bytecode_cache(config["bytecode_cache"])
# Pipeline stage jobs of this process hand themselves to one stage worker, which starts
# torch and the device once for the run (localbench.pipelines.worker, config
# `pipeline_worker`). A job on a cluster node parses this file in a Snakemake of its
# own, not the main one: no worker there.
if workflow.is_main_process:
    os.environ[lbworker.RUN_PID_VARIABLE] = str(os.getpid())
    os.environ[lbworker.WORKER_LOG_VARIABLE] = os.path.abspath(
        f"{RESULTS}/logs/pipelines/stage-worker.log"
    )
    # A run whose command line names a pipeline starts the worker now: its imports
    # overlap the rest of Snakemake's start.
    if not workflow.output_settings.dryrun:
        lbworker.start_while_planning(
            sys.argv[1:],
            {
                name: lbplan.pipeline_root(RESULTS, name)
                for name in config.get("pipelines") or {}
            },
            lbconfig.resolve_threads(config["threads"]),
            config["device"],
            config["pipeline_worker"],
        )
else:
    os.environ.pop(lbworker.RUN_PID_VARIABLE, None)
# Tiny checkpoints live apart from full ones; model names start with a letter or digit,
# so "_tiny" cannot collide with a model.
MODELS_ROOT = "models/_tiny" if config["size"] == "tiny" else "models"
MODELS = lbconfig.enabled_models(config)
# What tables, charts and the HTML report call each model (config `display_name`).
DISPLAY_NAMES = {
    name: shown
    for name, shown in sorted(lbnames.display_names(config).items())
    if name in MODELS
}
# The charts of the summary: one speed chart per task of the enabled models, memory,
# and the decode roofline (localbench.report.charts).
CHARTS = lbcharts.chart_names(config["models"][name]["task"] for name in MODELS)
# CPU threads of every benchmark job and of the warm-up (config `threads`).
THREADS = lbconfig.resolve_threads(config["threads"])
# The seed report's M4 figures, transcribed, shipped with the workflow.
SEED_REPORT = str(
    Path(workflow.basedir) / "workflow" / "reference" / "seed-m4-report.csv"
)


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    backend=r"eager|fast",
    batch=r"[1-9][0-9]*",


# One canonical settings file per job, rewritten only when its content changes: the
# jobs that read it rerun exactly when their settings change (README, "What triggers a
# rerun"). Jobs name them through the functions below, which a dry run redirects.
for _name in MODELS:
    _settings = lbconfig.model_settings(config, _name)
    lbconfig.write_if_changed(
        f"{MODELS_ROOT}/.settings/{_name}.json", lbconfig.fetch_settings(_settings)
    )
    for _backend in lbconfig.model_backends(config, _name):
        lbconfig.write_if_changed(
            f"{RESULTS}/settings/{_name}/{_backend}.json",
            {**_settings, "backend": _backend},
        )
        for _batch in lbconfig.throughput_batch_sizes(config, _name):
            lbconfig.write_if_changed(
                f"{RESULTS}/settings/{_name}/{_backend}/throughput-{_batch}.json",
                lbconfig.throughput_settings(config, _name, _backend, _batch),
            )


def fetch_settings_file(wildcards):
    """The settings that decide what is fetched for one model."""
    return lbconfig.read_path(f"{MODELS_ROOT}/.settings/{wildcards.model}.json")


def benchmark_settings_file(wildcards):
    """The settings of one model's benchmark with one backend."""
    return lbconfig.read_path(
        f"{RESULTS}/settings/{wildcards.model}/{wildcards.backend}.json"
    )


def result_files(wildcards=None):
    """One result file per enabled model and backend, in config order."""
    return [
        f"{RESULTS}/benchmarks/{name}/{backend}.json"
        for name in MODELS
        for backend in lbconfig.model_backends(config, name)
    ]


def throughput_settings_file(wildcards):
    """The settings of one throughput point: model, backend, batch size."""
    return lbconfig.read_path(
        f"{RESULTS}/settings/{wildcards.model}/{wildcards.backend}/throughput-{wildcards.batch}.json"
    )


def throughput_files(wildcards=None):
    """One result per throughput point (model, backend, batch size), in config order."""
    return [
        f"{RESULTS}/throughput/{name}/{backend}/batch-{batch}.json"
        for name in MODELS
        for backend in lbconfig.model_backends(config, name)
        for batch in lbconfig.throughput_batch_sizes(config, name)
    ]


def result_subcategory(wildcards):
    """The HTML report's folder of one model's result files: its display name."""
    return DISPLAY_NAMES.get(wildcards.model, wildcards.model)


def result_labels(wildcards):
    """The HTML report's columns for one result file."""
    return {
        "model": DISPLAY_NAMES.get(wildcards.model, wildcards.model),
        "config key": wildcards.model,
        "backend": wildcards.backend,
    }


def throughput_labels(wildcards):
    """The HTML report's columns for one throughput point."""
    return {
        "model": DISPLAY_NAMES.get(wildcards.model, wildcards.model),
        "config key": wildcards.model,
        "backend": f"{wildcards.backend}, batch {wildcards.batch}",
    }


def existing_pages(paths):
    """The pages among ``paths`` that a run has made: the HTML report takes the comparison
    and the pipeline reports only where they exist."""
    return [path for path in paths if Path(path).is_file()]


def existing_tables():
    """The benchmarks.csv of every profile that has one now."""
    return sorted(str(p) for p in Path("results").glob("*/benchmarks.csv"))


def existing_results():
    """The result files of every profile that has them now: compare sets each profile's
    current results against its own earlier archives."""
    return [
        name
        for name in sorted(
            str(p) for p in Path("results").glob("*/benchmarks/*/*.json")
        )
        # As for archives below: Snakemake fails the run on such an input name.
        if not set("{}") & set(name) and name.encode(errors="ignore").decode() == name
    ]


def existing_archives():
    """Every archive that may be read, including ones made on other machines: regular
    files only, none reached through a symlink (a FIFO would hang the job)."""
    archives, _refused = find_archives(Path("archive"))
    names = [str(path) for path in archives]
    # Snakemake fails the whole run on an input with braces (read as a wildcard) or with
    # bytes that are not UTF-8; the job lists archive/ itself, so these are still read.
    return [
        name
        for name in names
        if not set("{}") & set(name) and name.encode(errors="ignore").decode() == name
    ]


# The pipelines over the user's input folders: planned here, at parse time, from the
# folder listings (rules/pipelines.smk makes one rule per stage and batch). A pipeline
# that cannot be planned (a stage's model not configured, a folder that cannot be read)
# is left out with one line: planning never stops `report` or any other target.
PIPELINE_PLANS, PIPELINES_NOT_RUN = lbplan.plan_pipelines(
    config, RESULTS, MODELS_ROOT, logs_dir=f"{RESULTS}/logs"
)

for _plan in PIPELINE_PLANS.values():
    lbconfig.write_if_changed(_plan.inputs_record, _plan.listing.to_dict())
    for _stage in _plan.stages:
        lbconfig.write_if_changed(
            f"{_plan.root}/settings/{_stage['name']}.json", _stage["settings"]
        )
        if _stage["model"] not in MODELS:
            # A model used by a pipeline only is fetched like a benchmarked one.
            lbconfig.write_if_changed(
                f"{MODELS_ROOT}/.settings/{_stage['model']}.json",
                lbconfig.fetch_settings(
                    lbconfig.model_settings(config, _stage["model"])
                ),
            )


def pipeline_report_inputs(wildcards):
    """The inputs listing and every batch record of one pipeline."""
    plan = PIPELINE_PLANS[wildcards.pipeline]
    return {"inputs": lbconfig.read_path(plan.inputs_record), "records": plan.records()}


def pipeline_stages(wildcards):
    """The pipeline's stages in chain order, as the report names them."""
    return [
        {"name": s["name"], "model": s["model"]}
        for s in PIPELINE_PLANS[wildcards.pipeline].stages
    ]


# Once the scheduler has returned, the process would still wait for its last wake-up
# timer, up to a second (localbench.scheduler_timers): the run ends when its jobs do.
onsuccess:
    cancel_scheduler_timers()


onerror:
    cancel_scheduler_timers()

# Pipelines over the user's input folders: one job per stage and batch of files.
#
# The batches are planned here, at parse time, from the folder listings: a job's outputs
# are the per-file outputs of its batch, so a model loads once per batch, and a new file
# reruns only its own batch. Changing a stage's prompt or model rewrites its settings
# file: that stage's jobs rerun, and the later stages' jobs through their inputs.
from localbench.pipelines import plan as lbplan

PIPELINE_PLANS = {
    _name: lbplan.plan_pipeline(
        config, _name, RESULTS, MODELS_ROOT, logs_dir=f"{RESULTS}/logs"
    )
    for _name, _spec in config["pipelines"].items()
    if _spec.get("enabled", True)
}

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

for _plan in PIPELINE_PLANS.values():
    for _job in _plan.jobs:

        rule:
            name:
                _job.rule_name
            input:
                settings=_job.settings,
                manifest=_job.manifest,
                sources=_job.sources,
                questions=[q for q in _job.questions if q],
                previous=_job.previous_record,
            output:
                outputs=_job.outputs,
                record=_job.record,
            log:
                _job.log,
            conda:
                "../envs/localbench.yaml"
            params:
                names=_job.names,
                questions=_job.questions,
                batch=_job.batch_id,
            script:
                "../workflow/scripts/run_pipeline_stage.py"


wildcard_constraints:
    pipeline=r"[a-z0-9][a-z0-9_-]*",


def pipeline_report_inputs(wildcards):
    """The inputs listing and every batch record of one pipeline."""
    plan = PIPELINE_PLANS[wildcards.pipeline]
    return {"inputs": plan.inputs_record, "records": plan.records()}


def pipeline_stages(wildcards):
    """The pipeline's stages in chain order, as the report names them."""
    return [
        {"name": s["name"], "model": s["model"]}
        for s in PIPELINE_PLANS[wildcards.pipeline].stages
    ]


rule render_pipeline_report:
    input:
        unpack(pipeline_report_inputs),
    output:
        report=f"{RESULTS}/pipelines/{{pipeline}}/REPORT.md",
        counts=f"{RESULTS}/pipelines/{{pipeline}}/summary.json",
    log:
        f"{RESULTS}/logs/pipelines/{{pipeline}}/render_pipeline_report.log",
    conda:
        "../envs/localbench.yaml"
    params:
        stages=pipeline_stages,
        profile=PROFILE,
    script:
        "../workflow/scripts/render_pipeline_report.py"


# One target per pipeline, named after it; `pipelines` runs them all. Both end the run
# with one summary line per pipeline.
for _name, _plan in PIPELINE_PLANS.items():
    if _name in {r.name for r in workflow.rules} | {"pipelines", "report"}:
        raise WorkflowError(
            f"invalid config: pipelines.{_name}: the name is taken by a rule of the "
            "workflow; choose another"
        )

    rule:
        name:
            _name
        input:
            counts=[f"{_plan.root}/summary.json"],
        script:
            "../workflow/scripts/summarise_pipelines.py"


rule pipelines:
    input:
        counts=[f"{plan.root}/summary.json" for plan in PIPELINE_PLANS.values()],
    script:
        "../workflow/scripts/summarise_pipelines.py"

# Pipelines over the user's input folders: one job per stage and batch of files.
#
# The batches are planned at parse time, from the folder listings: a job's outputs are
# the per-file outputs of its batch, so a model loads once per batch (a whole stage up
# to 1024 files, unless the pipeline sets batch_size: localbench.pipelines.plan). A new
# file reruns its batch, whose files finished before are reused, not run again
# (localbench.pipelines.reuse). Changing a stage's prompt or model rewrites its settings
# file: that stage's jobs rerun, and the later stages' jobs through their inputs.
for _plan in PIPELINE_PLANS.values():
    for _job in _plan.jobs:

        rule:
            name:
                _job.rule_name
            input:
                settings=lbconfig.read_path(_job.settings),
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
            # A batch job runs torch on the config's `threads` (read in the job, so a
            # change of threads never reruns a pipeline's outputs).
            threads: THREADS
            params:
                names=_job.names,
                questions=_job.questions,
                batch=_job.batch_id,
                reuse=_job.reuse,
            script:
                "../workflow/scripts/run_pipeline_stage.py"


wildcard_constraints:
    pipeline=r"[a-z0-9][a-z0-9_-]*",


rule render_pipeline_report:
    input:
        unpack(pipeline_report_inputs),
    output:
        report=f"{RESULTS}/pipelines/{{pipeline}}/REPORT.md",
        counts=f"{RESULTS}/pipelines/{{pipeline}}/summary.json",
        # The same as a page of the HTML report (`snakemake --report`).
        page=report(
            f"{RESULTS}/pipelines/{{pipeline}}/REPORT.html",
            caption="../workflow/report/pipeline.rst",
            category="6. Pipelines",
            labels={"pipeline": "{pipeline}"},
        ),
    log:
        f"{RESULTS}/logs/pipelines/{{pipeline}}/render_pipeline_report.log",
    conda:
        "../envs/localbench.yaml"
    params:
        stages=pipeline_stages,
        profile=PROFILE,
    script:
        "../workflow/scripts/render_pipeline_report.py"


# The targets defined after this file (here and in the Snakefile).
TARGETS_DEFINED_LATER = {"pipelines", "report", "html_report"}


# One target per pipeline, named after it; `pipelines` runs them all. Both end the run
# with one summary line per pipeline; a pipeline left out at parse time prints why.
for _name in [*PIPELINE_PLANS, *PIPELINES_NOT_RUN]:
    if _name in {r.name for r in workflow.rules} | TARGETS_DEFINED_LATER:
        raise WorkflowError(
            f"invalid config: pipelines.{_name}: the name is taken by a rule of the "
            "workflow; choose another"
        )
    _plan = PIPELINE_PLANS.get(_name)

    rule:
        name:
            _name
        input:
            counts=[f"{_plan.root}/summary.json"] if _plan else [],
        log:
            f"{RESULTS}/logs/pipelines/{_name}/summary.log",
        # Reads a few lines and prints them: in Snakemake's own process (the workflow
        # profile's force-use-threads), not a second Snakemake that parses the workflow
        # again (0.8 s on a 2-core CPU, about 3 s on the H200 machine).
        localrule: True
        params:
            not_run=[PIPELINES_NOT_RUN[_name]] if _name in PIPELINES_NOT_RUN else [],
        run:
            from localbench.pipelines.report import end_of_run

            end_of_run(input.counts, params.not_run, log[0])


rule pipelines:
    input:
        counts=[f"{plan.root}/summary.json" for plan in PIPELINE_PLANS.values()],
    log:
        f"{RESULTS}/logs/pipelines/summary.log",
    localrule: True
    params:
        not_run=list(PIPELINES_NOT_RUN.values()),
    run:
        from localbench.pipelines.report import end_of_run

        end_of_run(input.counts, params.not_run, log[0])

# One benchmark job per model, one JSON result each.


rule benchmark_model:
    input:
        settings=benchmark_settings_file,
        manifest=f"{MODELS_ROOT}/{{model}}/manifest.json",
        hardware=f"{RESULTS}/hardware.json",
        warmup=f"{RESULTS}/warmup.json",
    output:
        report(
            f"{RESULTS}/benchmarks/{{model}}/{{backend}}.json",
            caption="../workflow/report/result.rst",
            category="3. Model results",
            subcategory=result_subcategory,
            labels=result_labels,
        ),
    log:
        f"{RESULTS}/logs/benchmark_model/{{model}}/{{backend}}.log",
    conda:
        "../envs/localbench.yaml"
    # Every core the run was given, so no other job runs beside a measurement; torch's
    # threads inside the job are the config's `threads`, whatever --cores says.
    threads: workflow.cores
    script:
        "../workflow/scripts/benchmark_model.py"

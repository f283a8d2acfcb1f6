# One benchmark job per model and backend, one JSON result each; one throughput job per
# model, backend and batch size.


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


rule benchmark_throughput:
    input:
        settings=throughput_settings_file,
        manifest=f"{MODELS_ROOT}/{{model}}/manifest.json",
        hardware=f"{RESULTS}/hardware.json",
        warmup=f"{RESULTS}/warmup.json",
    output:
        report(
            f"{RESULTS}/throughput/{{model}}/{{backend}}/batch-{{batch}}.json",
            caption="../workflow/report/throughput.rst",
            category="3. Model results",
            subcategory=result_subcategory,
            labels=throughput_labels,
        ),
    log:
        f"{RESULTS}/logs/benchmark_throughput/{{model}}/{{backend}}/batch-{{batch}}.log",
    conda:
        "../envs/localbench.yaml"
    threads: workflow.cores
    script:
        "../workflow/scripts/benchmark_model.py"

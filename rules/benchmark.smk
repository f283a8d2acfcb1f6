# One benchmark job per model, one JSON result each.


rule benchmark_model:
    input:
        settings=benchmark_settings_file,
        manifest=f"{MODELS_ROOT}/{{model}}/manifest.json",
        hardware=f"{RESULTS}/hardware.json",
        warmup=f"{RESULTS}/warmup.json",
    output:
        f"{RESULTS}/benchmarks/{{model}}/{{backend}}.json",
    log:
        f"{RESULTS}/logs/benchmark_model/{{model}}/{{backend}}.log",
    conda:
        "../envs/localbench.yaml"
    script:
        "../workflow/scripts/benchmark_model.py"

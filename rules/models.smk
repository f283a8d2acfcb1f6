# Model acquisition: hub download or synthetic build, described by a manifest.


rule fetch_model:
    input:
        settings=fetch_settings_file,
    output:
        f"{MODELS_ROOT}/{{model}}/manifest.json",
    log:
        f"{RESULTS}/logs/fetch_model/{{model}}.log",
    conda:
        "../envs/localbench.yaml"
    script:
        "../workflow/scripts/fetch_model.py"

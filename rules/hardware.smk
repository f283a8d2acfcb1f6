# The machine: what it is, and what bringing its accelerator up costs.


rule detect_hardware:
    output:
        f"{RESULTS}/hardware.json",
    log:
        f"{RESULTS}/logs/detect_hardware.log",
    conda:
        "../envs/localbench.yaml"
    params:
        device=config["device"],
        profile=PROFILE,
    script:
        "../workflow/scripts/detect_hardware.py"


rule warm_up_device:
    input:
        hardware=f"{RESULTS}/hardware.json",
    output:
        f"{RESULTS}/warmup.json",
    log:
        f"{RESULTS}/logs/warm_up_device.log",
    conda:
        "../envs/localbench.yaml"
    # Every core the run was given: nothing runs beside a measurement.
    threads: workflow.cores
    params:
        device=config["device"],
        threads=THREADS,
    script:
        "../workflow/scripts/warm_up_device.py"

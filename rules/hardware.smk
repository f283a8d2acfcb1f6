# The machine: what it is, and what bringing its accelerator up costs.


rule detect_hardware:
    output:
        report(
            f"{RESULTS}/hardware.json",
            caption="../workflow/report/hardware.rst",
            category="4. Machine",
            labels={"content": "hardware.json: the machine and its software"},
        ),
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
        report(
            f"{RESULTS}/warmup.json",
            caption="../workflow/report/warmup.rst",
            category="4. Machine",
            labels={"content": "warmup.json: device warm-up, bandwidth, matmul rate"},
        ),
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

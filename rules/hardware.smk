# The machine: what it is, and what bringing its accelerator up costs.


rule detect_hardware:
    output:
        f"{RESULTS}/hardware.json",
    params:
        device=config["device"],
        profile=PROFILE,
    log:
        f"{RESULTS}/logs/detect_hardware.log",
    script:
        "../workflow/scripts/detect_hardware.py"


rule warm_up_device:
    input:
        hardware=f"{RESULTS}/hardware.json",
    output:
        f"{RESULTS}/warmup.json",
    params:
        device=config["device"],
    log:
        f"{RESULTS}/logs/warm_up_device.log",
    script:
        "../workflow/scripts/warm_up_device.py"

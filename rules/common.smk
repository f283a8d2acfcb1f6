# Config validation, the hardware profile, paths and input functions.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from localbench import config as lbconfig
from localbench.device import DeviceUnavailable
from localbench.hardware import detect

try:
    lbconfig.check_config(config)
except lbconfig.ConfigError as error:
    raise WorkflowError(str(error)) from None
validate(config, schema=str(lbconfig.SCHEMA_PATH))


def detected_profile():
    try:
        slug = detect(config["device"])["profile"]
    except DeviceUnavailable as error:
        raise WorkflowError(str(error)) from None
    # Smoke runs on tiny models never mix with real results of the same machine.
    return f"{slug}-tiny" if config["size"] == "tiny" else slug


PROFILE = config["profile"] or detected_profile()
RESULTS = f"results/{PROFILE}"
# Tiny checkpoints live apart from full ones; model names start with a letter or digit,
# so "_tiny" cannot collide with a model.
MODELS_ROOT = "models/_tiny" if config["size"] == "tiny" else "models"
MODELS = lbconfig.enabled_models(config)


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    backend=r"eager|fast",


def settings_of(wildcards):
    """The complete settings of one benchmark job (defaults applied), as rule params."""
    return {
        **lbconfig.model_settings(config, wildcards.model),
        "backend": wildcards.backend,
    }


def result_files(wildcards=None):
    """One result file per enabled model and backend, in config order."""
    return [
        f"{RESULTS}/benchmarks/{name}/{backend}.json"
        for name in MODELS
        for backend in lbconfig.model_backends(config, name)
    ]


def fetch_settings_of(wildcards):
    """The settings that decide what is fetched: benchmark knobs do not refetch."""
    settings = lbconfig.model_settings(config, wildcards.model)
    settings.pop("benchmark")
    return settings

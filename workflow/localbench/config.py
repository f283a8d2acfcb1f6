"""The configuration: schema check with one-line messages, and per-model settings.

Snakemake's own ``validate`` fills the schema's defaults; :func:`check_config` runs first
so that a wrong key, type or value stops the run with one line that names the key and
what is allowed, instead of a schema dump.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

# Defaults for every benchmark key, so a model's settings are complete even when
# config.yaml names none of them. The schema describes the keys; these are the values.
BENCHMARK_DEFAULTS: dict[str, Any] = {
    "warmup_runs": 1,
    "repetitions": 3,
    "prompt_tokens": 128,
    "new_tokens": 32,
    "image_size": [640, 480],
    "audio_seconds": 10.0,
}


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


def load_schema() -> dict:
    """The JSON schema of config.yaml."""
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _key_path(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _resolve(schema: dict, subschema: dict) -> dict:
    ref = subschema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return schema["$defs"][ref.removeprefix("#/$defs/")]
    return subschema


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    where = _key_path(error.absolute_path)
    validator = error.validator
    if validator == "additionalProperties":
        allowed = sorted(_resolve(schema, error.schema).get("properties", {}))
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        keys = ", ".join(repr(k) for k in extra)
        return f"unknown key {keys} in {where}; allowed keys: {', '.join(allowed)}"
    if validator == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"{where}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if validator == "type":
        return f"{where}: expected {error.validator_value}, got {error.instance!r}"
    if validator == "required":
        return f"{where}: {error.message}"
    if validator == "pattern":
        return f"{where}: {error.instance!r} does not match the pattern {error.validator_value}"
    if validator == "propertyNames":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def check_config(config: dict, schema: dict | None = None) -> None:
    """Raise :class:`ConfigError` with one line naming the first bad key, if any."""
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(f"invalid config: {_describe(error, schema)}")


def model_settings(config: dict, name: str) -> dict:
    """Everything that decides one model's results, complete and with defaults applied.

    This is the canonical record of a model's settings: it goes into the result file
    and decides when that model must be measured again.
    """
    model = config["models"][name]
    benchmark = copy.deepcopy(BENCHMARK_DEFAULTS)
    benchmark.update(config.get("benchmark_defaults") or {})
    benchmark.update(model.get("benchmark") or {})
    return {
        "name": name,
        "task": model["task"],
        "repo": model["repo"],
        "revision": model.get("revision", "main"),
        "dtype": model.get("dtype", "auto"),
        "allow_pickle": bool(model.get("allow_pickle", False)),
        "benchmark": benchmark,
        "device": config.get("device", "auto"),
        "weights": config.get("weights", "auto"),
        "size": config.get("size", "full"),
        "memory_headroom_gb": float(config.get("memory_headroom_gb", 0.5)),
        "threads": resolve_threads(config.get("threads", "auto")),
    }


def resolve_threads(threads: int | str) -> int:
    """The CPU threads a job runs with: ``auto`` is the machine's physical cores (one
    thread per core is fastest for memory-bound decoding; hyper-threads share a core's
    caches and memory path)."""
    if threads != "auto":
        return int(threads)
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def model_backends(config: dict, name: str) -> list[str]:
    """The backends a model is benchmarked with, in config order."""
    backend = config["models"][name].get("backend", "eager")
    return [backend] if isinstance(backend, str) else list(backend)


def enabled_models(config: dict) -> list[str]:
    """Names of the models to run, in config order."""
    return [name for name, model in config["models"].items() if model.get("enabled", True)]


FETCH_KEYS = (
    "name",
    "task",
    "repo",
    "revision",
    "allow_pickle",
    "device",
    "weights",
    "size",
    "memory_headroom_gb",
)


def fetch_settings(settings: dict) -> dict:
    """The settings that decide what is fetched; benchmark knobs and dtype do not refetch."""
    return {key: settings[key] for key in FETCH_KEYS}


def write_if_changed(path: str | Path, value: Any) -> bool:
    """Write ``value`` as canonical JSON unless the file already holds exactly that.

    Leaving an unchanged file untouched keeps its modification time, so Snakemake reruns
    the jobs that read it only when the settings really changed, whatever the key order
    or comments of config.yaml, and without relying on its own metadata in .snakemake/.
    """
    from localbench.atomic import write_text

    text = canonical_json(value) + "\n"
    target = Path(path)
    if target.exists() and target.read_text(encoding="utf-8") == text:
        return False
    write_text(target, text)
    return True


def canonical_json(value: Any) -> str:
    """Key-order-independent JSON, for comparing and hashing settings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))

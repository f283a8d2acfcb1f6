"""The configuration: checks with one-line messages, and per-model settings.

:func:`check_config` runs before Snakemake's own ``validate`` (which fills the schema's
defaults), so that a wrong key, type or value stops the run with one line that names the
key and what is allowed, instead of a schema dump. Before the schema, the config's shape
is bounded (depth, number of values, text, finite numbers): whatever a YAML file expands
to, the check and its message stay small and fast.

The settings files written at parse time live here too (:func:`write_if_changed`): in a
dry run they are kept out of the project (:func:`plan_without_writing`).
"""

from __future__ import annotations

import atexit
import copy
import json
import math
import os
import reprlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import yaml

from localbench.atomic import write_bytes

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

# Defaults of a model's `throughput` block (batched decoding, text-generation models):
# short prompts, so that the decode steps and not the prompts of large batches dominate.
THROUGHPUT_DEFAULTS: dict[str, Any] = {
    "prompt_tokens": 32,
    "new_tokens": 32,
    "warmup_runs": 1,
    "repetitions": 3,
}

# Bounds on a config's shape, far above any real config (the shipped one holds about
# 150 values, the deepest 5 levels down) and low enough that the schema check and its
# messages stay small: a YAML alias "billion laughs" of a few hundred bytes expands to
# 10**9 values, and jsonschema builds the repr of a bad value into every error message.
MAX_DEPTH = 10
MAX_VALUES = 10_000
# Per mapping or list: jsonschema compares the items of a uniqueItems list pairwise.
MAX_ENTRIES = 256
# Characters of one key or string (a long prompt is a few thousand), and of all together.
MAX_STRING = 100_000
MAX_TEXT = 1_000_000

# What a message shows of a value: enough to recognise it, never the whole of a huge one.
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel = 2
_EXCERPT.maxdict = _EXCERPT.maxlist = _EXCERPT.maxtuple = 3
_EXCERPT.maxset = _EXCERPT.maxfrozenset = 3
_EXCERPT.maxstring = _EXCERPT.maxother = _EXCERPT.maxlong = 40
EXCERPT_LENGTH = 60
KEY_LENGTH = 40
PATH_LENGTH = 200

# The key Snakemake's config loader reads to run a file through YTE, a template engine
# that evaluates the Python code written in the file.
YTE_KEY = "__use_yte__"


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


def load_schema() -> dict:
    """The JSON schema of config.yaml."""
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def excerpt(value: Any) -> str:
    """A one-line repr of ``value``, at most 60 characters, however large or deep it is."""
    try:
        text = _EXCERPT.repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails (an int past Python's digit limit)
        text = f"<{type(value).__name__}>"
    text = " ".join(text.splitlines())
    return text if len(text) <= EXCERPT_LENGTH else text[: EXCERPT_LENGTH - 3] + "..."


def _key_name(key: Any) -> str:
    if isinstance(key, str) and key.isprintable() and 0 < len(key) <= KEY_LENGTH:
        return key
    return excerpt(key)


def key_path(path: Any) -> str:
    """``models.blip-base.benchmark.image_size[0]``: where a value sits in the config."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + _key_name(part)
    if len(text) > PATH_LENGTH:
        # The start names the key, the end the value's place inside it.
        half = PATH_LENGTH // 2
        text = text[: half - 3] + "..." + text[-half:]
    return text or "(top level)"


def _entries(value: Any) -> list[tuple[Any, Any]]:
    """The (key or index, value) pairs inside a mapping or list; none inside anything else."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return list(enumerate(value))
    return []


def check_shape(config: Any) -> None:
    """Raise :class:`ConfigError` for a config shaped like no real one.

    That is: nested deeper than ``MAX_DEPTH``, more than ``MAX_VALUES`` values or
    ``MAX_ENTRIES`` entries in one mapping or list, a string or key longer than
    ``MAX_STRING`` or more than ``MAX_TEXT`` characters in all, a key that is not text,
    or a number that is not finite (``.inf``, ``.nan``). The walk
    is iterative and stops at the first problem, so a value that expands without end
    (YAML aliases, a structure that contains itself) costs no more than the bounds.
    """
    values = text = 0
    stack: list[tuple[tuple, Any]] = [((), config)]
    while stack:
        path, value = stack.pop()
        where = key_path(path)
        values += 1
        if values > MAX_VALUES:
            raise ConfigError(
                f"invalid config: {where}: the config holds more than {MAX_VALUES} values "
                "(each use of a YAML alias counts); a config holds a few hundred"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"invalid config: {where}: expected a finite number, got {value}")
        # Python cannot even print an integer of more than 4300 digits.
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise ConfigError(
                f"invalid config: {where}: a number of {value.bit_length()} bits; a number of "
                "a config fits in 64"
            )
        if isinstance(value, dict | list | tuple | set | frozenset) and len(value) > MAX_ENTRIES:
            raise ConfigError(
                f"invalid config: {where}: more than {MAX_ENTRIES} entries; a mapping or "
                "list of a config holds a few dozen"
            )
        entries = _entries(value)
        if entries and len(path) >= MAX_DEPTH:
            raise ConfigError(
                f"invalid config: {where}: nested more than {MAX_DEPTH} levels deep; the "
                "values of a config are at most 5 levels deep"
            )
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise ConfigError(
                        f"invalid config: {where}: the key {excerpt(key)} is not text; "
                        "write it in quotes"
                    )
                if len(key) > MAX_STRING:
                    raise ConfigError(
                        f"invalid config: {where}: a key of {len(key)} characters; a key "
                        f"holds at most {MAX_STRING}"
                    )
                text += len(key)
        elif isinstance(value, str | bytes):
            if len(value) > MAX_STRING:
                raise ConfigError(
                    f"invalid config: {where}: {len(value)} characters; a value holds at "
                    f"most {MAX_STRING}"
                )
            text += len(value)
        if text > MAX_TEXT:
            raise ConfigError(
                f"invalid config: {where}: the config holds more than {MAX_TEXT} characters "
                "of text; a config holds a few thousand"
            )
        # Reversed onto the stack, so the first problem found is the first in the file.
        stack.extend(((*path, key), child) for key, child in reversed(entries))


def check_config(config: Any, schema: dict | None = None) -> None:
    """Raise :class:`ConfigError` with one line naming the first bad key, if any."""
    check_shape(config)
    if isinstance(config, dict) and YTE_KEY in config:
        raise ConfigError(
            f"invalid config: {YTE_KEY}: YTE templates are refused, since they run the code "
            "written in the config; write plain values"
        )
    schema = schema or load_schema()
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(config))
    if error is not None:
        raise ConfigError(f"invalid config: {_describe(error, schema)}")
    for name, model in config["models"].items():
        if model.get("throughput") and model["task"] != "text-generation":
            raise ConfigError(
                f"invalid config: models.{name}.throughput: expected only on "
                f"text-generation models (batched decoding), not on {model['task']}"
            )


# An integer is a whole number written as one: jsonschema takes 3.0 for an integer, and
# range(3.0) would fail much later, in every job of the run.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)

# Words for the bounds of numbers and sizes, as "expected <words> <bound>".
_NUMBER_BOUNDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "more than",
    "exclusiveMaximum": "less than",
}
_SIZE_BOUNDS = {
    "minItems": ("at least", "items"),
    "maxItems": ("at most", "items"),
    "minLength": ("at least", "characters"),
    "maxLength": ("at most", "characters"),
    "minProperties": ("at least", "entries"),
    "maxProperties": ("at most", "entries"),
}


def _resolve(schema: dict, subschema: dict) -> dict:
    ref = subschema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return schema["$defs"][ref.removeprefix("#/$defs/")]
    return subschema


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    """The error in one line of bounded length.

    jsonschema's own ``error.message`` is never used: it holds the repr of the whole
    bad value, however large. Values are shown through :func:`excerpt`.
    """
    where = key_path(error.absolute_path)
    validator, expected, instance = error.validator, error.validator_value, error.instance
    got = excerpt(instance)
    subschema = error.schema if isinstance(error.schema, dict) else {}
    description = subschema.get("description")
    if validator == "additionalProperties":
        allowed = sorted(_resolve(schema, subschema).get("properties", {}))
        extra = sorted(set(instance) - set(allowed)) if isinstance(instance, dict) else []
        keys = ", ".join(excerpt(k) for k in extra[:3]) + (", ..." if len(extra) > 3 else "")
        return f"unknown key {keys} in {where}; allowed keys: {', '.join(allowed)}"
    if validator == "enum":
        allowed = ", ".join(str(v) for v in expected)
        return f"{where}: {got} is not allowed; allowed values: {allowed}"
    if validator == "type":
        types = expected if isinstance(expected, str) else " or ".join(expected)
        return f"{where}: expected {types}, got {got}"
    if validator == "required":
        missing = [k for k in expected if isinstance(instance, dict) and k not in instance]
        return f"{where}: {(missing or expected)[0]!r} is a required property"
    if validator == "pattern":
        name = "the name " if "propertyNames" in error.absolute_schema_path else ""
        allowed = description or f"the pattern {expected}"
        return f"{where}: {name}{got} does not match: {allowed}"
    if validator in _NUMBER_BOUNDS:
        return f"{where}: expected a number {_NUMBER_BOUNDS[validator]} {expected}, got {got}"
    if validator in _SIZE_BOUNDS:
        bound, unit = _SIZE_BOUNDS[validator]
        size = len(instance) if hasattr(instance, "__len__") else got
        return f"{where}: expected {bound} {expected} {unit}, got {size}"
    if validator == "uniqueItems":
        return f"{where}: expected no repeated items, got {got}"
    if validator == "oneOf" and description:
        return f"{where}: {got} is not allowed; expected {description}"
    return f"{where}: {got} is not valid ({validator}: {excerpt(expected)})"


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


def throughput_batch_sizes(config: dict, name: str) -> list[int]:
    """The batch sizes a model's throughput is measured at, in config order ([]: none)."""
    block = config["models"][name].get("throughput") or {}
    return list(block.get("batch_sizes", []))


def throughput_settings(config: dict, name: str, backend: str, batch_size: int) -> dict:
    """One throughput point's settings: the model's, the backend, the batch and its run
    lengths. A point's file changes only with them, so adding a batch size measures only
    the new point."""
    block = {k: v for k, v in (config["models"][name].get("throughput") or {}).items()}
    block.pop("batch_sizes", None)
    run = {**THROUGHPUT_DEFAULTS, **block, "batch_size": batch_size}
    return {**model_settings(config, name), "backend": backend, "throughput": run}


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


# In a dry run (plan_without_writing), a settings file that would change is written
# under a throwaway folder instead of in the project, and jobs read it from there: the
# folder, under "folder", once the dry run has begun.
_DRY_RUN: dict[str, Path] = {}


def plan_without_writing() -> None:
    """From now on, :func:`write_if_changed` writes nothing in the project (a dry run).

    A file that would change is written to a throwaway folder outside the project,
    removed when the process ends, and :func:`read_path` names that copy: it is newer
    than every output, so the dry run plans exactly the jobs a real run would rerun.
    """
    if "folder" not in _DRY_RUN:
        folder = Path(tempfile.mkdtemp(prefix="localbench-dry-run-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _DRY_RUN["folder"] = folder


def _aside(path: Path) -> Path | None:
    folder = _DRY_RUN.get("folder")
    if folder is None:
        return None
    # Absolute and normalised, so that no ".." can lead out of the folder.
    absolute = Path(os.path.abspath(path))
    return folder / absolute.relative_to(absolute.anchor)


def write_if_changed(path: str | Path, value: Any) -> bool:
    """Write ``value`` as canonical JSON unless the file already holds exactly that.

    Leaving an unchanged file untouched keeps its modification time, so Snakemake reruns
    the jobs that read it only when the settings really changed, whatever the key order
    or comments of config.yaml, and without relying on its own metadata in .snakemake/.
    After :func:`plan_without_writing`, a change is written aside instead; jobs name the
    file they read through :func:`read_path`. Returns whether the settings changed.
    """
    data = (canonical_json(value) + "\n").encode("utf-8")
    target = Path(path)
    if target.is_file() and target.read_bytes() == data:
        return False
    write_bytes(_aside(target) or target, data)
    return True


def read_path(path: str | Path) -> str:
    """The file a job reads for ``path`` written by :func:`write_if_changed`.

    That is ``path`` itself, or in a dry run where the file would change, its copy
    written aside.
    """
    aside = _aside(Path(path))
    return str(aside) if aside is not None and aside.is_file() else str(path)


def canonical_json(value: Any) -> str:
    """Key-order-independent JSON, for comparing and hashing settings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))

"""Hostile configs and failing jobs: one clear line each, never a traceback, and a dry run
that writes nothing.

The configs are generated: every numeric key of the schema gets every spelling of an
infinite or undefined number, every name the workflow writes in results/ is tried as a
profile, and alias bombs, deep nesting and files in other encodings are built here.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, snakemake
from localbench.config import (
    MAX_DEPTH,
    ConfigError,
    check_config,
    excerpt,
    load_schema,
)
from localbench.config_files import check_config_file
from localbench.logs import job_log
from snakemake.cli import parse_config

SHIPPED = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
SCHEMA = load_schema()

# A message is one line, short enough to read, and never a traceback.
MESSAGE_LIMIT = 300


def assert_one_line(message: str, *expected: str) -> None:
    assert message.startswith("invalid config: "), message[:MESSAGE_LIMIT]
    assert "\n" not in message and len(message) <= MESSAGE_LIMIT, message[:MESSAGE_LIMIT]
    for text in expected:
        assert text in message, message


def refusal(config) -> str:
    with pytest.raises(ConfigError) as caught:
        check_config(config)
    return str(caught.value)


def set_at(config: dict, path: tuple, value) -> dict:
    """``config`` with ``value`` at ``path``, creating the mappings on the way."""
    parent = config
    for key, next_key in zip(path, path[1:], strict=False):
        if isinstance(parent, dict) and key not in parent:
            parent[key] = [] if isinstance(next_key, int) else {}
        parent = parent[key]
    if isinstance(parent, list) and path[-1] == len(parent):
        parent.append(value)
    else:
        parent[path[-1]] = value
    return config


def numeric_keys(schema: dict, node: dict, config, path: tuple = ()):
    """Every path to a number or integer the schema describes, with names taken from
    ``config`` where the schema allows any (a model, a pipeline, a list item)."""
    node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")] if "$ref" in node else node
    if node.get("type") in ("number", "integer"):
        yield path
    for key, child in node.get("properties", {}).items():
        yield from numeric_keys(schema, child, (config or {}).get(key), (*path, key))
    if isinstance(node.get("additionalProperties"), dict) and config:
        name = next(iter(config))
        yield from numeric_keys(schema, node["additionalProperties"], config[name], (*path, name))
    if "items" in node:
        item = config[0] if isinstance(config, list) and config else None
        yield from numeric_keys(schema, node["items"], item, (*path, 0))


def dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


NUMERIC_KEYS = list(numeric_keys(SCHEMA, SCHEMA, SHIPPED))
# Every way YAML spells an infinite or undefined number, as Python reads it.
NON_FINITE = [
    yaml.safe_load(f"value: {spelling}")["value"]
    for spelling in (".inf", "-.inf", "+.INF", ".Inf", ".nan", ".NaN", ".NAN", "1.0e+999")
]


def test_the_schema_walk_finds_every_kind_of_number():
    keys = {dotted(p) for p in NUMERIC_KEYS}
    assert "memory_headroom_gb" in keys and "benchmark_defaults.audio_seconds" in keys
    assert any(k.startswith("models.") and k.endswith("benchmark.audio_seconds") for k in keys)
    assert any(k.startswith("pipelines.") and k.endswith("stages[0].max_new_tokens") for k in keys)
    assert "benchmark_defaults.image_size[0]" in keys and len(keys) >= 15


@pytest.mark.parametrize("path", NUMERIC_KEYS, ids=dotted)
def test_numbers_that_are_not_finite_are_refused_at_every_numeric_key(path):
    for value in NON_FINITE:
        config = set_at(copy.deepcopy(SHIPPED), path, value)
        assert_one_line(refusal(config), f"invalid config: {dotted(path)}: ", "finite")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "NaN", "Infinity", "1e999"])
def test_non_finite_numbers_from_the_command_line_are_refused(value):
    # Read as Snakemake's command line reads `--config key=value`, then checked as the
    # workflow checks its config; the whole command line runs for one of them below.
    config = {**copy.deepcopy(SHIPPED), **parse_config([f"memory_headroom_gb={value}"])}
    assert_one_line(refusal(config), "invalid config: memory_headroom_gb: expected a finite number")


def test_a_non_finite_number_from_the_command_line_stops_the_run(workdir):
    completed = snakemake(
        workdir, "-n", "report", "--config", "memory_headroom_gb=nan", check=False
    )
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert "invalid config: memory_headroom_gb: expected a finite number" in output
    assert "Traceback" not in output and not (workdir / "results").exists()


def test_a_non_finite_number_in_a_models_benchmark_block_stops_the_run(workdir):
    text = (workdir / "config.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "    task: speech-recognition\n",
        "    task: speech-recognition\n    benchmark: {audio_seconds: .nan}\n",
        1,
    )
    (workdir / "config.yaml").write_text(text, encoding="utf-8")
    completed = snakemake(workdir, "-n", "report", *TINY, check=False)
    assert completed.returncode != 0
    assert (
        "invalid config: config.yaml: models.whisper-base.benchmark.audio_seconds: expected a "
        "finite number" in completed.stdout + completed.stderr
    )


def test_whole_numbers_must_be_written_as_integers():
    config = set_at(copy.deepcopy(SHIPPED), ("benchmark_defaults", "repetitions"), 3.0)
    assert_one_line(refusal(config), "benchmark_defaults.repetitions: expected integer, got 3.0")


# ---------------------------------------------------------------------------------------
# Profiles: never a name the workflow itself writes in results/.


def names_written_in_results() -> set[str]:
    """Every file or folder name the rules write directly in results/ (not a profile's)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "rules").glob("*.smk"))
    return set(re.findall(r"""["']results/([^/"'{]+)""", text))


def test_the_rules_write_these_names_in_results():
    assert {"COMPARISON.md", "logs"} <= names_written_in_results()


HOSTILE_PROFILES = sorted(
    {
        *names_written_in_results(),
        *(n.lower() for n in names_written_in_results()),
        *(n.upper() for n in names_written_in_results()),
        *(n.capitalize() for n in names_written_in_results()),
        "SUMMARY.md",
        "index.html",
        "report.html",
        "chart.svg",
        ".",
        "..",
        ".hidden",
        "../escape",
        "a/b",
        "/abs",
        "a\\b",
        "x.md",
        "-starts-with-dash",
        "_underscore",
        " space",
        "tab\there",
        "new\nline",
        "ünïcödé",
        "name*",
        "a" * 65,
        "Mixed-Case",
    }
)


@pytest.mark.parametrize("key", ["profile", "compare_baseline"])
@pytest.mark.parametrize("name", HOSTILE_PROFILES, ids=ascii)
def test_profiles_that_could_collide_with_the_workflows_files_are_refused(key, name):
    config = {**copy.deepcopy(SHIPPED), key: name}
    assert_one_line(refusal(config), f"invalid config: {key}: ", "lower-case letters")


@pytest.mark.parametrize("name", ["", "test-machine", "m4_max", "cuda-nvidia-h200-141gb", "a"])
def test_plain_profile_names_are_accepted(name):
    check_config({**copy.deepcopy(SHIPPED), "profile": name, "compare_baseline": name})


def test_detected_profiles_are_plain_names():
    from localbench.measure.hardware import profile_slug

    for accelerator, chip in [
        ("cuda", "NVIDIA H100 80GB HBM3"),
        ("mps", "Apple M4 Max"),
        ("cpu", "AMD Ryzen 9 7950X 16-Core Processor"),
    ]:
        record = {
            "accelerator": accelerator,
            "chip": chip,
            "cpu_logical_cores": 32,
            "accelerator_memory_bytes": 80 * 2**30,
        }
        slug = profile_slug(record)
        check_config({**copy.deepcopy(SHIPPED), "profile": slug})
        check_config({**copy.deepcopy(SHIPPED), "profile": f"{slug}-tiny"})


def test_a_colliding_profile_stops_a_dry_run_before_anything_is_written(workdir):
    completed = snakemake(
        workdir, "-n", "compare", "--config", "profile=COMPARISON.md", check=False
    )
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert "invalid config: profile: 'COMPARISON.md' does not match" in output
    assert not (workdir / "results").exists()


# ---------------------------------------------------------------------------------------
# Values of any size or depth: a bounded check and a bounded message.


def alias_bomb(levels: int, width: int = 10) -> str:
    """YAML of a few hundred bytes whose last anchor expands to width**levels strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def bomb(levels: int):
    return yaml.safe_load(alias_bomb(levels))[f"l{levels - 1}"]


def nested(depth: int, leaf=1):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def huge_values():
    """Values too large, deep or long for any config; the key they sit at, by name."""
    recursive: list = []
    recursive.append(recursive)
    return {
        "billion laughs": bomb(9),
        "million laughs": bomb(6),
        "deep": nested(50),
        "very deep": nested(5000),
        "itself": recursive,
        "long text": "x" * 2_000_000,
        "wide list": list(range(100_000)),
        "wide mapping": {f"k{i}": i for i in range(100_000)},
        "long key": {"k" * 200_000: 1},
        "big int": 10**5000,
        "many long strings": ["y" * 90_000] * 20,
    }


PLACES = [
    ("unknown_key",),
    ("profile",),
    ("models", "blip-base", "benchmark", "image_size"),
    ("models", "blip-base", "backend"),
    ("models", "blip-base", "repo"),
    ("pipelines", "visual-qa", "questions"),
    ("pipelines", "visual-qa", "stages", 0, "prompt"),
    ("benchmark_defaults",),
]


@pytest.mark.parametrize("place", PLACES, ids=dotted)
@pytest.mark.parametrize("kind", list(huge_values()))
def test_huge_and_deep_values_give_one_short_line_naming_the_key(place, kind):
    config = set_at(copy.deepcopy(SHIPPED), place, huge_values()[kind])
    message = refusal(config)
    assert_one_line(message)
    # The key, or the first part of its path, where the value sits.
    assert dotted(place).split(".")[0] in message


def test_a_value_as_large_as_a_config_allows_is_checked_quickly_and_refused_briefly():
    # Just within every bound: many unsortable, distinct items in a list that must hold
    # unique items (jsonschema compares such items pairwise).
    items = [{"backend": i} for i in range(256)]
    config = set_at(copy.deepcopy(SHIPPED), ("models", "blip-base", "backend"), items)
    assert_one_line(refusal(config), "models.blip-base.backend: ")


def test_a_bad_value_under_long_keys_is_named_in_a_short_line():
    value = float("nan")
    for level in range(MAX_DEPTH - 1):
        value = {f"{level}" + "k" * 5000: value}
    message = refusal({**copy.deepcopy(SHIPPED), "unknown": value})
    assert_one_line(message, "invalid config: unknown.", "expected a finite number")


def test_excerpts_are_one_short_line_whatever_the_value():
    for value in [*huge_values().values(), "a\nb" * 1000, b"\x00" * 10**6, object()]:
        text = excerpt(value)
        assert len(text) <= 60 and "\n" not in text


def test_keys_that_are_not_text_are_refused():
    for key in (1, True, None, 1.5):
        config = copy.deepcopy(SHIPPED)
        config["models"][key] = config["models"]["blip-base"]
        assert_one_line(refusal(config), "invalid config: models: the key ", "not text")


def write_bytes(workdir: Path, name: str, data: bytes) -> Path:
    path = workdir / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_in_config_yaml_stops_the_run_with_one_line(workdir, levels):
    with open(workdir / "config.yaml", "a", encoding="utf-8") as handle:
        handle.write(alias_bomb(levels))
    completed = snakemake(workdir, "-n", "report", check=False)
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert "invalid config: config.yaml: " in output
    assert "Traceback" not in output and "MemoryError" not in output
    assert max(len(line) for line in output.splitlines()) < MESSAGE_LIMIT


def test_an_alias_bomb_in_an_overlay_is_named(workdir):
    overlay = write_bytes(workdir, "overlay.yaml", alias_bomb(9).encode())
    completed = snakemake(workdir, "-n", "report", "--configfile", str(overlay), check=False)
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert f"invalid config: {overlay}: " in output and "Traceback" not in output


@pytest.mark.parametrize("brackets", [100, 5000, 100_000])
def test_deeply_nested_config_yaml_stops_the_run_with_one_line(workdir, brackets):
    text = (workdir / "config.yaml").read_text(encoding="utf-8")
    text += "deep: " + "[" * brackets + "]" * brackets + "\n"
    (workdir / "config.yaml").write_text(text, encoding="utf-8")
    completed = snakemake(workdir, "-n", "report", check=False)
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert f"invalid config: config.yaml: nested more than {MAX_DEPTH} levels deep" in output
    assert "Traceback" not in output and "RecursionError" not in output


# ---------------------------------------------------------------------------------------
# Config files: read safely, named in the message.


ENCODINGS = {
    "latin-1": "profile: café\n".encode("latin-1"),
    "utf-16": "profile: café\n".encode("utf-16"),
    "cp1252 quotes": b"profile: \x93quoted\x94\n",
    "truncated utf-8": "profile: caf\u00e9".encode()[:-1],
    "random bytes": bytes(range(256)) * 4,
    "lone continuation byte": b"models:\n  \x80: {}\n",
}


@pytest.mark.parametrize("kind", ENCODINGS)
def test_config_files_that_are_not_utf8_are_refused_by_name(tmp_path, kind):
    path = write_bytes(tmp_path, "bad.yaml", ENCODINGS[kind])
    with pytest.raises(ConfigError) as caught:
        check_config_file(path)
    assert_one_line(str(caught.value), f"invalid config: {path}: not UTF-8 text")


@pytest.mark.parametrize("kind", ["latin-1", "utf-16", "random bytes"])
def test_a_config_yaml_that_is_not_utf8_stops_the_run_with_one_line(workdir, kind):
    write_bytes(workdir, "config.yaml", ENCODINGS[kind])
    completed = snakemake(workdir, "-n", "report", check=False)
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert "invalid config: config.yaml: not UTF-8 text" in output
    assert "Traceback" not in output


@pytest.mark.xfail(
    strict=True,
    reason="Snakemake 9.27.1 reads --configfile files in its command line, before the "
    "workflow runs, and a UnicodeDecodeError escapes its loader as a traceback",
)
def test_an_overlay_that_is_not_utf8_stops_the_run_with_one_line(workdir):
    overlay = write_bytes(workdir, "overlay.yaml", ENCODINGS["latin-1"])
    completed = snakemake(workdir, "-n", "report", "--configfile", str(overlay), check=False)
    assert completed.returncode != 0
    assert "Traceback" not in completed.stdout + completed.stderr


NOT_PLAIN = {
    "python tag": b"profile: !!python/name:os.system\n",
    "python apply": b"x: !!python/object/apply:os.system ['true']\n",
    "syntax": b"models: [unclosed\n",
    "tabs": b"models:\n\tx: 1\n",
    "two documents": b"a: 1\n---\nb: 2\n",
    "list at the top": b"- a\n- b\n",
    "empty": b"",
    "huge integer": b"x: " + b"9" * 5000 + b"\n",
    "control character": b"profile: a\x07b\n",
    "nan in json": b'{"memory_headroom_gb": NaN, "models": {}}',
    "deep json": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("kind", NOT_PLAIN)
def test_config_files_that_are_not_plain_yaml_or_json_are_refused_by_name(tmp_path, kind):
    path = write_bytes(tmp_path, "bad.yaml", NOT_PLAIN[kind])
    with pytest.raises(ConfigError) as caught:
        check_config_file(path)
    assert_one_line(str(caught.value), f"invalid config: {path}: ")


def test_config_files_that_are_not_regular_files_or_too_large_are_refused(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    large = write_bytes(tmp_path, "large.yaml", b"# padding\n" * 200_000)
    for path, expected in [
        (fifo, "not a regular file"),
        (folder, "not a regular file"),
        (large, "bytes"),
        (tmp_path / "missing.yaml", "cannot be read"),
    ]:
        with pytest.raises(ConfigError) as caught:
            check_config_file(path)
        assert_one_line(str(caught.value), f"invalid config: {path}: ", expected)


def test_the_shipped_config_file_is_plain():
    check_config_file(ROOT / "config.yaml")


# ---------------------------------------------------------------------------------------
# YTE templates: a config file is code, like a Snakefile; templates are refused.


def yte_config(workdir: Path, marker: Path) -> bytes:
    """The shipped config as a YTE template whose code writes ``marker`` when run."""
    text = (workdir / "config.yaml").read_text(encoding="utf-8")
    code = f"?open({str(marker)!r}, 'w').write('ran') and 'cpu'"
    return ("__use_yte__: true\n" + text.replace("device: auto", f'device: "{code}"')).encode()


def test_a_yte_template_as_config_yaml_is_refused_before_its_code_runs(workdir):
    marker = workdir / "code-ran"
    write_bytes(workdir, "config.yaml", yte_config(workdir, marker))
    completed = snakemake(workdir, "-n", "report", check=False)
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert "invalid config: config.yaml: __use_yte__ asks for YTE templates" in output
    assert not marker.exists()


def test_a_yte_template_as_an_overlay_stops_the_run_with_one_line(workdir):
    overlay = write_bytes(workdir, "overlay.yaml", yte_config(workdir, workdir / "code-ran"))
    completed = snakemake(workdir, "-n", "report", "--configfile", str(overlay), check=False)
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert f"invalid config: {overlay}: __use_yte__ asks for YTE templates" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("source", ["command line", "json"])
def test_the_yte_key_is_refused_wherever_the_workflow_sees_it(workdir, source):
    if source == "json":
        config = {"__use_yte__": True, **SHIPPED}
        write_bytes(workdir, "config.yaml", json.dumps(config).encode())
        completed = snakemake(workdir, "-n", "report", check=False)
        expected = "invalid config: config.yaml: __use_yte__ asks for YTE templates"
    else:
        completed = snakemake(workdir, "-n", "report", "--config", "__use_yte__=true", check=False)
        expected = "invalid config: __use_yte__: YTE templates are refused"
    assert completed.returncode != 0
    assert expected in completed.stdout + completed.stderr


# ---------------------------------------------------------------------------------------
# A dry run writes nothing; a real run writes the settings.


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` but Snakemake's own .snakemake/, with size and mtime."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".snakemake"]
        for name in [*dirs, *files]:
            path = Path(folder) / name
            status = path.lstat()
            found[str(path.relative_to(root))] = (status.st_size, status.st_mtime_ns)
    return found


def planned(completed) -> str:
    return (completed.stdout + completed.stderr).split("Job stats:")[1].split("\n\n")[0]


def test_a_dry_run_writes_nothing_and_still_plans_every_job(workdir):
    images = workdir / "inputs" / "images"
    images.mkdir(parents=True)
    (images / "photo.png").write_bytes(b"\x89PNG not really")
    before = snapshot(workdir)
    aside_before = set(Path(tempfile.gettempdir()).glob("localbench-dry-run-*"))
    for target in ("report", "pipelines", "compare"):
        snakemake(workdir, "-n", target, *TINY)
        assert snapshot(workdir) == before, target
    # The settings a dry run writes aside, outside the project, are gone after it.
    assert set(Path(tempfile.gettempdir()).glob("localbench-dry-run-*")) == aside_before
    jobs = planned(snakemake(workdir, "-n", "report", "pipelines", *TINY))
    for rule in ("fetch_model", "benchmark_model", "photo-stories"):
        assert rule in jobs

    # A real run writes the settings files the dry run did not.
    snakemake(workdir, "--cores", "1", "results/test-machine/hardware.json", *TINY)
    settings = workdir / "results" / "test-machine" / "settings" / "blip-base" / "eager.json"
    assert json.loads(settings.read_text())["name"] == "blip-base"
    assert (workdir / "models" / "_tiny" / ".settings" / "blip-base.json").is_file()


def test_a_dry_run_after_a_settings_change_writes_nothing(workdir):
    snakemake(workdir, "--cores", "1", "results/test-machine/hardware.json", *TINY)
    settings = workdir / "results" / "test-machine" / "settings" / "blip-base" / "eager.json"
    old = settings.read_bytes()
    before = snapshot(workdir)
    completed = snakemake(
        workdir,
        "-n",
        "results/test-machine/hardware.json",
        *TINY,
        "memory_headroom_gb=0.25",
    )
    assert "Nothing to be done" in completed.stdout + completed.stderr
    assert snapshot(workdir) == before and settings.read_bytes() == old


# ---------------------------------------------------------------------------------------
# A failing job: one line on stderr naming its log; the traceback is in the log.


def test_an_exception_in_a_job_exits_with_one_line_and_logs_the_traceback(tmp_path, capsys):
    log = tmp_path / "logs" / "job.log"
    with pytest.raises(SystemExit) as exit_:
        with job_log(log):
            print("working")
            raise ValueError("first line\nsecond line")
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ValueError: first line")
    assert f"traceback in {log}" in err and "Traceback" not in err
    text = log.read_text()
    assert "working" in text and "Traceback (most recent call last)" in text
    assert "second line" in text


BAD_RESULT_FILES = {
    "truncated json": b'{"model": "whisper-base", "sta',
    "not utf-8": b'{"model": "caf\xe9"}',
    "empty": b"",
}


@pytest.mark.parametrize("kind", BAD_RESULT_FILES)
def test_a_failing_job_shows_one_line_and_keeps_the_traceback_in_its_log(workdir, kind):
    config = copy.deepcopy(SHIPPED)
    config["models"] = {"whisper-base": {**config["models"]["whisper-base"], "backend": "eager"}}
    config["pipelines"] = {}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = workdir / "results" / "test-machine" / "benchmarks" / "whisper-base" / "eager.json"
    result.parent.mkdir(parents=True)
    result.write_bytes(BAD_RESULT_FILES[kind])
    # Only the aggregation may run: it reads the damaged result file and fails.
    completed = snakemake(
        workdir,
        "--cores",
        "1",
        "results/test-machine/benchmarks.csv",
        "--allowed-rules",
        "aggregate_results",
        *TINY,
        check=False,
    )
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    log = "results/test-machine/logs/aggregate_results.log"
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].endswith(f"(traceback in {log})"), errors
    assert "Traceback" not in output
    assert "Error in rule aggregate_results" in output  # Snakemake's own short report
    assert "Traceback (most recent call last)" in (workdir / log).read_text()

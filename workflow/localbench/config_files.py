"""Config files as Snakemake reads them: refused in one line when Snakemake would choke.

Snakemake loads a config file with its own loader: JSON first, then YAML through YTE (a
template engine that runs the Python code written in a file whose top level sets
``__use_yte__: true``). A file that is not UTF-8, nested deep enough to exhaust Python's
recursion, or that is not a mapping fails there with a traceback or a message that does
not name the file. :func:`check_config_file` reads the file first, without running
anything in it, and names the file and the problem in one line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from localbench.config import MAX_DEPTH, YTE_KEY, ConfigError, check_shape, excerpt

# A config is a few kilobytes; far larger is no config, and is not read at all.
MAX_BYTES = 1_000_000

_OPENING_EVENTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSING_EVENTS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def check_config_file(path: str | os.PathLike) -> None:
    """Raise :class:`ConfigError`, one line naming ``path``, unless it is a plain config.

    A plain config is a regular file of at most ``MAX_BYTES`` bytes of UTF-8 text, JSON
    or YAML without Python tags, with a mapping at the top level that does not ask for
    YTE templates, and of the shape :func:`localbench.config.check_shape` accepts
    (nesting, size, finite numbers). Nothing written in the file is run.
    """
    value = _parse(_read_text(Path(path)), path)
    if not isinstance(value, dict):
        raise ConfigError(
            f"invalid config: {path}: expected keys at the top level, got {excerpt(value)}"
        )
    if YTE_KEY in value:
        raise ConfigError(
            f"invalid config: {path}: {YTE_KEY} asks for YTE templates, which run the code "
            "written in the file; they are refused: write plain values"
        )
    try:
        check_shape(value)
    except ConfigError as error:
        where = str(error).removeprefix("invalid config: ")
        raise ConfigError(f"invalid config: {path}: {where}") from None


def _read_text(path: Path) -> str:
    try:
        # A FIFO or a device would block the read, or never end.
        if not stat.S_ISREG(path.stat().st_mode):
            raise ConfigError(f"invalid config: {path}: not a regular file")
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"invalid config: {path}: cannot be read ({error.strerror})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"invalid config: {path}: more than {MAX_BYTES} bytes; a config file holds a "
            "few thousand"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"invalid config: {path}: not UTF-8 text (byte 0x{data[error.start]:02x} at "
            f"offset {error.start}); save it as UTF-8"
        ) from None


def _parse(text: str, path: str | os.PathLike) -> Any:
    """The file's value, parsed as Snakemake does (JSON first, then YAML), but safely."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigError(
            f"invalid config: {path}: nested more than {MAX_DEPTH} levels deep"
        ) from None
    except ValueError:
        pass  # not JSON: YAML, as for Snakemake
    try:
        _check_yaml_depth(text, path)
        # The safe loader builds no Python objects from tags, and shares the value of an
        # alias instead of copying it: a "billion laughs" costs no memory here, and
        # check_shape bounds its size.
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"invalid config: {path}: not plain YAML or JSON: {_yaml_problem(error)}"
        ) from None
    except ConfigError:
        raise
    except ValueError as error:
        # A value YAML reads but Python cannot hold, e.g. an integer of 5000 digits.
        raise ConfigError(
            f"invalid config: {path}: not plain YAML or JSON: {_first_line(error)}"
        ) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What YAML found wrong, and on which line, in a few words."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        return error.problem + (f" (line {mark.line + 1})" if mark else "")
    return _first_line(error)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def _check_yaml_depth(text: str, path: str | os.PathLike) -> None:
    """Refuse nesting deeper than any config before anything is built from it.

    YAML's composer is recursive: a few thousand nested brackets, a few kilobytes, end
    in a RecursionError in Snakemake's loader. The event stream is read flat.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, _OPENING_EVENTS):
            depth += 1
            if depth > MAX_DEPTH + 1:
                raise ConfigError(
                    f"invalid config: {path}: nested more than {MAX_DEPTH} levels deep "
                    f"(line {event.start_mark.line + 1}); the values of a config are at most "
                    "5 levels deep"
                )
        elif isinstance(event, _CLOSING_EVENTS):
            depth -= 1

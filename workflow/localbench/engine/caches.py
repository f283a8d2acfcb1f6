"""Where compiled kernels are kept between jobs: torch.compile's (Inductor: compiled
graphs, autotuning results) and Triton's (GPU kernels, the project's own included).

Every benchmark and pipeline job is a new process; without a lasting cache each one
compiles and autotunes the same decoder again, tens of seconds on a GPU. Inductor's
default lives in the temporary folder (``/tmp/torchinductor_<user>``), which a reboot or
a tmp cleaner empties, so both caches go under ``~/.cache/localbench/``
(``$XDG_CACHE_HOME`` respected), unless the user set their own. Both are read when torch
first compiles, so setting them before that, at the top of a job, is enough; this module
imports nothing heavy.

Python's own bytecode is the third cache (:func:`use_bytecode_cache`, config
``bytecode_cache``). An install made without bytecode (``pip install --no-compile``, an
image stripped of ``__pycache__``) in an environment that sets ``PYTHONDONTWRITEBYTECODE``
compiles torch's and transformers' sources again in every process that imports them. On
the H200 machine, whose torch has no bytecode and whose environment sets the variable,
a pipeline stage's imports took 10.4-12.2 s; with the bytecode cached, 3.4-4.6 s
(docs/benchmarks/2026-12-04-cuda-h200-pipelines-bytecode.md).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Environment variable -> its folder under the project's cache.
COMPILE_CACHES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/localbench``, else ``~/.cache/localbench`` (a relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG specification says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "localbench"


def use_lasting_compile_caches() -> dict[str, str]:
    """Point each compile cache the user has not set at its folder under
    :func:`cache_home`; return every cache's folder as used."""
    for variable, folder in COMPILE_CACHES.items():
        if not os.environ.get(variable):
            os.environ[variable] = str(cache_home() / folder)
    return {variable: os.environ[variable] for variable in COMPILE_CACHES}


BYTECODE_CACHE_MODES = ("auto", "always", "never")
BYTECODE_FOLDER = "pycache"


def bytecode_folder() -> Path:
    """Where :func:`use_bytecode_cache` keeps the bytecode."""
    return cache_home() / BYTECODE_FOLDER


def has_own_bytecode(package: str = "torch") -> bool:
    """Whether ``package`` (found, not imported) has bytecode beside its sources, where
    Python looks when no ``PYTHONPYCACHEPREFIX`` is set; True where it cannot be found."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken install, or imported without a spec
        return True
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return True
    folder = Path(spec.origin).parent / "__pycache__"
    return folder.is_dir() and any(folder.glob("__init__.*.pyc"))


def use_bytecode_cache(mode: str, environ: dict | None = None) -> str | None:
    """For the processes started from here on (the jobs and the stage worker): keep the
    bytecode of what they import under :func:`cache_home` (``PYTHONPYCACHEPREFIX``), and
    let them write it there, ``PYTHONDONTWRITEBYTECODE`` notwithstanding (it keeps
    bytecode out of the installed packages' folders, and nothing is written there).

    ``mode`` (config ``bytecode_cache``): ``auto`` where torch has no bytecode of its own
    (:func:`has_own_bytecode`; where it has, a cache elsewhere would only be read
    instead of it), ``always``, ``never`` (nothing is written, as Python was told).
    A ``PYTHONPYCACHEPREFIX`` the user set is kept as it is. Returns the cache's folder,
    or None where none is used."""
    if mode not in BYTECODE_CACHE_MODES:
        allowed = ", ".join(BYTECODE_CACHE_MODES)
        raise ValueError(f"bytecode_cache: expected one of {allowed}, got {mode!r}")
    environ = os.environ if environ is None else environ
    if mode == "never" or environ.get("PYTHONPYCACHEPREFIX"):
        return None
    if mode == "auto" and has_own_bytecode():
        return None
    environ["PYTHONPYCACHEPREFIX"] = str(bytecode_folder())
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return environ["PYTHONPYCACHEPREFIX"]

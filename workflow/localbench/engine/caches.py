"""Where compiled kernels are kept between jobs: torch.compile's (Inductor: compiled
graphs, autotuning results) and Triton's (GPU kernels, the project's own included).

Every benchmark and pipeline job is a new process; without a lasting cache each one
compiles and autotunes the same decoder again, tens of seconds on a GPU. Inductor's
default lives in the temporary folder (``/tmp/torchinductor_<user>``), which a reboot or
a tmp cleaner empties, so both caches go under ``~/.cache/localbench/``
(``$XDG_CACHE_HOME`` respected), unless the user set their own. Both are read when torch
first compiles, so setting them before that, at the top of a job, is enough; this module
imports nothing heavy.
"""

from __future__ import annotations

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

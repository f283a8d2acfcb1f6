"""Holds one Snakemake job at its start, for tests/test_faults.py.

Python imports ``sitecustomize`` at start-up from its path; with this folder on
PYTHONPATH and ``LOCALBENCH_TEST_HOLD=<script>:<folder>``, the job whose rule script is
``<script>.py`` (Snakemake runs it as ``.snakemake/scripts/tmp....<script>.py``) writes
``<folder>/held`` with its process id, then waits until ``<folder>/release`` exists before
its script runs. A test can then act while that job is verifiably running, whatever the
load on the machine. Every other process ignores it.
"""

import os
import sys
import time
from pathlib import Path

_script, _, _folder = os.environ.get("LOCALBENCH_TEST_HOLD", "").partition(":")
if _script and sys.argv and sys.argv[0].endswith(f".{_script}.py"):
    _marks = Path(_folder)
    (_marks / "held.tmp").write_text(str(os.getpid()))
    (_marks / "held.tmp").rename(_marks / "held")
    _deadline = time.monotonic() + 600  # a hang guard only: the test releases the job
    while not (_marks / "release").exists() and time.monotonic() < _deadline:
        time.sleep(0.05)

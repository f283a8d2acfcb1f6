"""Send a job's output to its Snakemake log file (and keep a one-line error on stderr)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


@contextlib.contextmanager
def job_log(path: str | Path):
    """Redirect Python's stdout, stderr and logging into ``path`` for the block."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    real_stderr = sys.stderr
    with open(path, "a", encoding="utf-8") as handle:
        handler = logging.StreamHandler(handle)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield logging.getLogger("localbench")
        except Exception as error:
            print(f"error: {error} (log: {path})", file=real_stderr)
            raise
        finally:
            logging.getLogger().removeHandler(handler)

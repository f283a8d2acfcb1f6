"""Send a job's output to its Snakemake log file; a failing job says so in one line."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path

from localbench.results import one_line


@contextlib.contextmanager
def job_log(path: str | Path):
    """Redirect Python's stdout, stderr and logging into ``path`` for the block.

    An exception that leaves the block ends the job: its traceback goes to the log file,
    stderr gets one ``error: ...`` line naming that file, and the process exits with
    status 1 (Snakemake then reports the job as failed), without a traceback on stderr.
    """
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
            traceback.print_exception(error, file=handle)
            handle.flush()
            print(f"error: {one_line(error)} (traceback in {path})", file=real_stderr)
            raise SystemExit(1) from None
        finally:
            logging.getLogger().removeHandler(handler)

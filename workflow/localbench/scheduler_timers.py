"""The timers Snakemake's job scheduler leaves behind when a run ends.

Each scheduling pass of Snakemake's job scheduler (``JobScheduler.schedule``) starts a
``threading.Timer`` that wakes the scheduler again after ``--max-jobs-per-timespan``'s
timespan (1 s by default). The timer is not a daemon thread, so once the run is over the
interpreter still waits for the last one to fire before the process exits: up to a whole
timespan added to every run (py-spy: the main thread sat about 1.0 s in
``threading._shutdown`` after a 13 s pipeline run). The workflow's ``onsuccess`` and
``onerror`` handlers (rules/common.smk), which Snakemake calls once the scheduler has
returned, cancel them.
"""

from __future__ import annotations

import threading

# The qualified name of the scheduler's wake-up (a lambda in JobScheduler's
# ``_schedule_reevalutation``): only these timers are cancelled, never another's.
SCHEDULER_WAKE_UP = "JobScheduler._schedule_reevalutation.<locals>."


def cancel_scheduler_timers() -> int:
    """Cancel the job scheduler's pending wake-ups; call only after the scheduler has
    returned (nothing is left for them to wake). Returns how many were cancelled."""
    cancelled = 0
    for thread in threading.enumerate():
        name = getattr(getattr(thread, "function", None), "__qualname__", "")
        if isinstance(thread, threading.Timer) and name.startswith(SCHEDULER_WAKE_UP):
            thread.cancel()
            cancelled += 1
    return cancelled

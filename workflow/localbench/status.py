"""Every status word a record of this project carries, defined once.

A model's result (``results``), a fetched model's manifest (``acquire``, ``hub``), a
pipeline file's record (``pipelines.batch``) and an energy record (``energy``) each
have a ``status``; the words below are the only ones they use, and the labels are how
the reports show them.
"""

from __future__ import annotations

MEASURED = "measured"  # a result with measured figures
SKIPPED = "skipped"  # not run, with the reason (does not fit in memory; a later stage's file)
FAILED = "failed"  # tried and failed, with the reason
PENDING_ACCESS = "pending_access"  # a person must act on credentials (gated repository)
UNSUPPORTED = "unsupported"  # not supported yet, with the reason
READY = "ready"  # a fetched model whose checkpoint can be loaded
DONE = "done"  # a pipeline file whose output was written
NOT_AVAILABLE = "not available"  # an energy record where no counter can be read

# A model's result (and its manifest, when it was not fetched) has one of these.
RESULT_STATUSES = (MEASURED, SKIPPED, FAILED, PENDING_ACCESS, UNSUPPORTED)
LABELS = {
    MEASURED: "measured",
    SKIPPED: "skipped",
    FAILED: "failed",
    PENDING_ACCESS: "pending access",
    UNSUPPORTED: "not supported yet",
    READY: "ready",
    DONE: "done",
    NOT_AVAILABLE: "not available",
}

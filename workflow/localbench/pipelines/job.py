"""One pipeline stage job: what Snakemake gives it (:class:`BatchJob`) and what it does
with that (:func:`run_job`), the same whether the job's own process runs it or the
run's stage worker (:mod:`localbench.pipelines.worker`) runs it for that process.

Importing this module imports nothing heavy; :func:`run_job` imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class BatchJob:
    """The paths and names of one stage job over one batch of files (the rule's input,
    output, params and log, as :mod:`localbench.pipelines.plan` planned them)."""

    settings: str  # the stage's settings file
    manifest: str  # the stage model's manifest (its folder holds the checkpoint)
    batch: str
    names: list[str]
    sources: list[str]
    outputs: list[str]
    questions: list[str]  # a sidecar question file per name, "" where there is none
    previous: str | None  # the previous stage's record of this batch
    reuse: str  # the stage's finished files (localbench.pipelines.reuse)
    record: str  # the batch record this job writes last
    log: str
    threads: int  # torch's CPU threads for the job (config `threads`, resolved)

    def to_dict(self) -> dict:
        """Plain JSON, for the stage worker."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BatchJob:
        """The job ``to_dict`` wrote."""
        return cls(**data)


def run_job(job: BatchJob, startup: dict, open_engine=None, worker: dict | None = None) -> dict:
    """Run ``job``: every file of its batch gets its output, then the batch record is
    written (:func:`localbench.pipelines.batch.run_stage_batch`), with the job's
    ``startup`` (where its time went before the work) and, when the stage worker ran it,
    ``worker`` (what the worker paid before it). ``open_engine``: how the stage's model
    is opened (the stage worker's, which may hold it loaded already). Everything the job
    prints goes to its log; an error ends the job (``SystemExit(1)``, the traceback in
    the log). Returns the record."""
    from localbench.atomic import read_json, write_json
    from localbench.engine.caches import use_lasting_compile_caches
    from localbench.engine.device import use_threads
    from localbench.engine.threads import openmp_record
    from localbench.logs import job_log
    from localbench.pipelines.batch import BatchItem, run_stage_batch
    from localbench.status import DONE

    # Read when torch first compiles, not at import: compiled kernels and autotuning
    # results last across jobs (localbench.engine.caches).
    compile_caches = use_lasting_compile_caches()
    with job_log(job.log) as log:
        threads = use_threads(job.threads)
        log.info("compile caches: %s", compile_caches)
        if worker and "pid" in worker:
            log.info("run by the stage worker (pid %s), its job %d", worker["pid"], worker["job"])
        elif worker:
            log.info("run in the job's own process: %s", worker["not_used"])
        items = [
            BatchItem(name=name, source=source, output=output, questions=questions or None)
            for name, source, output, questions in zip(
                job.names, job.sources, job.outputs, job.questions, strict=True
            )
        ]
        settings = read_json(job.settings)
        record = run_stage_batch(
            settings,
            read_json(job.manifest),
            Path(job.manifest).parent,
            job.batch,
            items,
            previous_batch=job.previous,
            log=log,
            reuse_dir=job.reuse,
            **({"open_engine": open_engine} if open_engine else {}),
        )
        done = sum(1 for f in record["files"] if f["status"] == DONE)
        log.info(
            "%s batch %s: %d of %d files done (%d of them reused) on %d threads",
            settings["stage"], job.batch, done, len(items), record["reused"], threads,
        )  # fmt: skip
        record = {**record, "torch_threads": threads, **openmp_record(), "startup": startup}
        if worker:
            record["worker"] = worker
        write_json(job.record, record)
    return record

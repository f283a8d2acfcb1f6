"""A pipeline's REPORT.md and its end-of-run summary, from the batch records alone.

Every latency shown was measured by the batch jobs of this run; the layout lives in the
Jinja2 template ``workflow/templates/pipeline_report.md.j2``.
"""

from __future__ import annotations

import json
from pathlib import Path

from localbench.atomic import write_text
from localbench.measure.stats import Measurement
from localbench.report.summary import md, template_environment
from localbench.results import now_utc
from localbench.status import DONE, FAILED, SKIPPED


def md_block(text: str) -> str:
    """Multi-line model output as a Markdown quote, every line escaped: it cannot start a
    heading, a table or a link, nor end the quote early."""
    lines = [md(line) for line in (text or "").splitlines() if line.strip()]
    return "\n".join(f"> {line}  " for line in lines) if lines else "> *(empty output)*"


def _ms(value_s: float) -> str:
    return f"{value_s * 1e3:.0f}"


def _shortened_output(name: str, record: dict, extension: str) -> str | None:
    """A note naming the output file, escaped, where it is not ``<name>.<extension>``
    (a name too long for the file system gets a short one)."""
    output = Path(record.get("output") or "").name
    if not output or output == f"{name}.{extension}":
        return None
    return f"output file: {md(output)}"


def _stage_row(stage: dict, batches: list[dict]) -> dict:
    files = [f for batch in batches for f in batch["files"]]
    done = [f for f in files if f["status"] == DONE]
    # A reused file's timings are an earlier run's: counted as done, never timed here.
    latencies = [f["latency_s"] for f in done if "reused_from" not in f]
    loads = [batch["load_s"] for batch in batches if "load_s" in batch]
    row = {
        "name": stage["name"],
        "model": stage["model"],
        "synthetic": any(batch.get("synthetic") for batch in batches),
        "done": len(done),
        "reused": len(done) - len(latencies),
        "failed": sum(1 for f in files if f["status"] == FAILED),
        "skipped": sum(1 for f in files if f["status"] == SKIPPED),
        "batches": len(batches),
        "loads": len(loads),
        "load_s_total": f"{sum(loads):.2f}" if loads else "n/a",
        "device": next((b["device"] for b in batches if b.get("device")), "n/a"),
    }
    if latencies:
        stats = Measurement.from_values(latencies, "s")
        # Files decoded together overlap: the batches' inference wall time, where they
        # record it, is the time the files took.
        walls = [batch.get("inference_s") for batch in batches if batch["files"]]
        inference_s = sum(walls) if walls and None not in walls else sum(latencies)
        row.update(
            p50_ms=_ms(stats.median),
            p90_ms=_ms(stats.p90),
            files_per_s=f"{len(latencies) / inference_s:.2f}" if inference_s else "n/a",
            inference_s=inference_s,
        )
    return row


def report_context(
    pipeline: str, stages: list[dict], inputs: dict, batches: list[dict], profile: str
) -> dict:
    """Rows and sentences for the template, from the inputs listing and batch records.

    ``stages`` are ``{"name", "model"}`` in chain order; ``batches`` are every batch
    record of every stage.
    """
    by_stage = {stage["name"]: [] for stage in stages}
    for batch in batches:
        by_stage[batch["stage"]].append(batch)
    per_file: dict[str, dict] = {}
    extensions = {}  # stage name to its output files' extension
    for stage in stages:
        for batch in sorted(by_stage[stage["name"]], key=lambda b: b["batch"]):
            extensions[stage["name"]] = batch.get("settings", {}).get("extension", "txt")
            for record in batch["files"]:
                per_file.setdefault(record["name"], {})[stage["name"]] = record
    files, failures = [], []
    end_to_end = []
    for name in sorted(per_file):
        records = per_file[name]
        steps = []
        for stage in stages:
            record = records.get(stage["name"])
            if record is None:
                continue
            step = {"stage": stage["name"], "status": record["status"]}
            if record["status"] == DONE:
                step["output"] = md_block(record["text"])
                reused = record.get("reused_from")
                step["latency_ms"] = None if reused else _ms(record["latency_s"])
                extra = [
                    f"reused: done by batch {md(reused['batch'])} at {reused['started_at']}"
                    if reused
                    else None,
                    f"{record['windows']} audio window(s), {record['audio_seconds']:.1f} s"
                    if "windows" in record
                    else None,
                    f"questions: {md(record['questions_from'])}"
                    if "questions_from" in record
                    else None,
                    _shortened_output(name, record, extensions[stage["name"]]),
                ]
                step["note"] = "; ".join(e for e in extra if e)
            else:
                shortened = _shortened_output(name, record, extensions[stage["name"]])
                step["reason"] = md(record["reason"]) + (f" ({shortened})" if shortened else "")
                if record["status"] != SKIPPED:
                    failures.append(
                        {"name": md(name), "stage": stage["name"], "reason": md(record["reason"])}
                    )
            steps.append(step)
        complete = all(records.get(s["name"], {}).get("status") == DONE for s in stages)
        # End to end only where every stage ran the file in this run.
        timed = complete and not any("reused_from" in r for r in records.values())
        total_s = (
            sum(r["latency_s"] for r in records.values() if r["status"] == DONE) if timed else 0
        )
        if timed:
            end_to_end.append(total_s)
        files.append(
            {
                "name": md(name),
                "steps": steps,
                "complete": complete,
                "end_to_end_ms": _ms(total_s) if timed else None,
            }
        )
    for rejected in inputs.get("rejected", []):
        failures.append(
            {"name": md(rejected["name"]), "stage": "input", "reason": md(rejected["reason"])}
        )
    done = sum(1 for f in files if f["complete"])
    stage_rows = [_stage_row(stage, by_stage[stage["name"]]) for stage in stages]
    context = {
        "pipeline": pipeline,
        "profile": profile,
        "generated_at": now_utc(),
        "folder": md(inputs["folder"]),
        "note": md(inputs["note"]) if inputs.get("note") else None,
        "stages": stage_rows,
        "synthetic_stages": [row["name"] for row in stage_rows if row["synthetic"]],
        "files": files,
        "failures": failures,
        "counts": {
            "files": len(files) + len(inputs.get("rejected", [])),
            "done": done,
            "failed": len(files) - done + len(inputs.get("rejected", [])),
        },
    }
    if end_to_end:
        stats = Measurement.from_values(end_to_end, "s")
        context["end_to_end"] = {"p50_ms": _ms(stats.median), "p90_ms": _ms(stats.p90)}
    return context


def render_report(context: dict) -> str:
    """REPORT.md from :func:`report_context`'s result."""
    return template_environment().get_template("pipeline_report.md.j2").render(**context)


def summary_line(pipeline: str, counts: dict, note: str | None, report: str | Path) -> str:
    """The one line the run ends with for a pipeline."""
    if counts["files"] == 0:
        return f"{pipeline}: no input files: {note}"
    return (
        f"{pipeline}: {counts['done']} of {counts['files']} files done, "
        f"{counts['failed']} failed; report: {report}"
    )


def end_of_run(counts: list[str], not_run: list[str], log: str | Path) -> str:
    """Print, and write to ``log``, the line of each pipeline that ran (from its
    ``summary.json`` in ``counts``), then the ``not_run`` lines of pipelines left out
    at parse time; returns the text."""
    lines = [json.loads(Path(path).read_text(encoding="utf-8"))["line"] for path in counts]
    lines.extend(not_run)
    text = "\n".join(lines) if lines else "no pipelines are configured (config.yaml: pipelines)"
    print(text)
    write_text(log, text + "\n")
    return text

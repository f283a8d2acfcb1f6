"""The plan of a pipeline, made when Snakemake parses the workflow: stages, input files,
stable batches and output paths.

Nothing here loads a model or reads a file's content: a name or type problem is found
from the folder listing alone, so the report can name it without any job running.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from localbench.config import ConfigError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
TEXT_EXTENSIONS = (".txt", ".md")
# What the first stage's task reads; later stages read the previous stage's text.
INPUT_KIND = {
    "speech-recognition": "audio",
    "image-captioning": "image",
    "visual-question-answering": "image",
    "text-generation": "text",
}
KIND_EXTENSIONS = {"audio": AUDIO_EXTENSIONS, "image": IMAGE_EXTENSIONS, "text": TEXT_EXTENSIONS}
# Used where a stage sets no max_new_tokens: per audio window, per caption, per
# question, per generated text.
DEFAULT_MAX_NEW_TOKENS = {
    "speech-recognition": 128,
    "image-captioning": 30,
    "visual-question-answering": 20,
    "text-generation": 96,
}
DEFAULT_QUESTIONS = ("What is shown in this picture?",)
# Folders of a pipeline's own that a stage's output folder must not take.
RESERVED_STAGE_NAMES = {"batches", "settings"}
# Stage settings that decide a stage's outputs; benchmark knobs are not among them, so
# changing how a model is benchmarked never reruns a pipeline.
MODEL_KEYS = ("name", "task", "repo", "revision", "dtype", "device", "weights", "size")


def _stage_where(pipeline: str, index: int) -> str:
    return f"pipelines.{pipeline}.stages[{index}]"


def missing_models(config: dict) -> dict[str, str]:
    """Pipelines that name a model not configured under ``models``, with the reason.

    They are left out of the run, not an error: trimming ``models`` for a benchmark must
    not stop ``report``. The ``pipelines`` target names them.
    """
    models = config.get("models") or {}
    missing = {}
    for pipeline, spec in (config.get("pipelines") or {}).items():
        for index, stage in enumerate(spec.get("stages", [])):
            if stage.get("model") not in models:
                missing[pipeline] = (
                    f"{pipeline}: not run: {_stage_where(pipeline, index)}.model "
                    f"{stage.get('model')!r} is not a model configured under models"
                )
                break
    return missing


def check_pipelines(config: dict) -> None:
    """Raise ConfigError, one line naming the key, for a pipeline the schema cannot judge
    (pipelines naming an unconfigured model are :func:`missing_models`' business)."""
    models = config.get("models") or {}
    skipped = missing_models(config)
    for pipeline, spec in (config.get("pipelines") or {}).items():
        if pipeline in skipped:
            continue
        names = [stage.get("name") for stage in spec.get("stages", [])]
        for index, stage in enumerate(spec.get("stages", [])):
            where = _stage_where(pipeline, index)
            model = stage.get("model")
            task = models[model].get("task")
            allowed = INPUT_KIND if index == 0 else {"text-generation"}
            if task not in allowed:
                raise ConfigError(
                    f"invalid config: {where}.model: {model!r} is a {task} model; "
                    f"{'a first' if index == 0 else 'a later'} stage takes "
                    f"{', '.join(sorted(allowed))}"
                )
            prompt = stage.get("prompt")
            if task == "text-generation" and (not prompt or "{previous}" not in prompt):
                raise ConfigError(
                    f"invalid config: {where}.prompt: a text-generation stage needs a prompt "
                    "containing {previous} (where the previous stage's output goes)"
                )
            if task != "text-generation" and prompt is not None:
                raise ConfigError(
                    f"invalid config: {where}.prompt: only text-generation stages take a "
                    f"prompt; {model!r} is a {task} model"
                )
            if stage.get("name") in RESERVED_STAGE_NAMES:
                raise ConfigError(
                    f"invalid config: {where}.name: {stage['name']!r} is reserved "
                    f"({', '.join(sorted(RESERVED_STAGE_NAMES))})"
                )
            if names.count(stage.get("name")) > 1:
                raise ConfigError(
                    f"invalid config: {where}.name: {stage['name']!r} names two stages of "
                    f"pipeline {pipeline!r}"
                )
        first_task = models[spec["stages"][0]["model"]].get("task") if spec.get("stages") else None
        if "questions" in spec and first_task != "visual-question-answering":
            raise ConfigError(
                f"invalid config: pipelines.{pipeline}.questions: questions are asked by a "
                "visual-question-answering first stage only"
            )


def stage_settings(config: dict, pipeline: str, index: int, model_settings: dict) -> dict:
    """Everything that decides one stage's outputs; the canonical record of the stage.

    Written to a settings file that every batch of the stage reads, so changing the
    stage's prompt or model reruns it (and, through its outputs, the stages after it)
    and nothing before it.
    """
    spec = config["pipelines"][pipeline]
    stage = spec["stages"][index]
    task = model_settings["task"]
    settings = {
        "pipeline": pipeline,
        "stage": stage["name"],
        "index": index,
        "model": {key: model_settings[key] for key in MODEL_KEYS},
        "max_new_tokens": stage.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS[task]),
        "extension": stage.get("extension", "txt"),
    }
    if task == "text-generation":
        settings["prompt"] = stage["prompt"]
    if task == "visual-question-answering":
        settings["questions"] = list(spec.get("questions") or DEFAULT_QUESTIONS)
    if index > 0:
        settings["previous_stage"] = spec["stages"][index - 1]["name"]
    return settings


def printable_name(name: str) -> str:
    """A file name as text that can be shown anywhere: undecodable bytes as \\x escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def name_problem(name: str) -> str | None:
    """Why a file name cannot be used as part of an output path, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename the file"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "file name contains control characters (such as a newline); rename the file"
    if "{" in name or "}" in name:
        return "file name contains { or }, which Snakemake reads as a wildcard; rename the file"
    if "<" in name or ">" in name:
        return (
            "file name contains < or >, which Snakemake reads as a path variable; rename the file"
        )
    return None


def sidecar_path(folder: Path, name: str) -> Path:
    """Where an image's questions live: ``<image stem>.txt`` beside it."""
    return folder / f"{Path(name).stem}.txt"


@dataclass
class InputListing:
    """The usable files of an input folder, the rejected ones with reasons, and a note
    when the folder holds nothing to run."""

    folder: str
    kind: str
    usable: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict:
        return {
            "folder": self.folder,
            "kind": self.kind,
            "usable": self.usable,
            "rejected": self.rejected,
            "note": self.note,
        }


def scan_inputs(folder: str, kind: str, sidecars: bool = False) -> InputListing:
    """List ``folder``'s files (not subfolders, not hidden files) for a pipeline reading
    ``kind``; with ``sidecars``, ``.txt`` files are questions, not inputs."""
    listing = InputListing(folder=folder, kind=kind)
    extensions = KIND_EXTENSIONS[kind]
    expected = ", ".join(ext.lstrip(".") for ext in extensions)
    path = Path(folder)
    if not path.exists():
        listing.note = f"{folder}/ does not exist: put {kind} files there ({expected})"
        return listing
    if not path.is_dir():
        listing.note = f"{folder} is not a folder"
        return listing
    inside = path.resolve()
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        name = entry.name
        if name.startswith("."):
            continue
        named_like_input = Path(name).suffix.lower() in extensions
        if entry.is_dir(follow_symlinks=False) and not named_like_input:
            continue  # subfolders are not read
        if entry.is_symlink() and inside not in Path(entry.path).resolve().parents:
            # A link may point anywhere (~/.ssh, /etc): only files of the folder are read.
            listing.rejected.append(
                {"name": printable_name(name), "reason": "a link pointing outside the folder"}
            )
            continue
        if entry.is_dir():
            listing.rejected.append(
                {"name": printable_name(name), "reason": "a folder, not a file"}
            )
            continue
        if sidecars and name.lower().endswith(".txt"):
            continue
        reason = name_problem(name)
        if reason is None:
            suffix = Path(name).suffix.lower()
            if suffix not in extensions:
                found = f"extension {suffix!r}" if suffix else "no extension"
                article = "an" if kind[0] in "aei" else "a"
                reason = f"not {article} {kind} file: {found} (expected {expected})"
            elif not entry.is_file():
                reason = "not a regular file"
            elif entry.stat().st_size == 0:
                reason = "empty file (0 bytes)"
            elif not os.access(entry.path, os.R_OK):
                reason = "cannot be read (permission denied)"
        if reason is None:
            listing.usable.append(name)
        else:
            listing.rejected.append({"name": printable_name(name), "reason": reason})
    if not listing.usable and not listing.rejected:
        listing.note = f"{folder}/ holds no files: put {kind} files there ({expected})"
    return listing


@dataclass(frozen=True)
class Batch:
    """Files that one job runs with one model load; ``id`` stays the same as long as the
    batch's first file does."""

    id: str
    names: tuple[str, ...]


def _digest(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def stable_batches(names: list[str], batch_size: int) -> list[Batch]:
    """Cut the sorted names into batches of ``batch_size`` files on average.

    A batch ends after a name whose hash is divisible by ``batch_size`` (content-defined
    chunking), or at ``2 * batch_size`` files. The cut points depend on the names alone,
    not on their positions, so adding or removing a file changes only the batch it falls
    in (or splits that one batch in two): every other batch keeps its files and its id,
    and its jobs do not rerun.
    """
    batches: list[Batch] = []
    current: list[str] = []
    for name in sorted(names):
        current.append(name)
        if _digest(name) % batch_size == 0 or len(current) >= 2 * batch_size:
            batches.append(_batch(current))
            current = []
    if current:
        batches.append(_batch(current))
    return batches


def _batch(names: list[str]) -> Batch:
    first = hashlib.sha256(names[0].encode("utf-8")).hexdigest()
    return Batch(id=f"b{first[:10]}", names=tuple(names))


def output_path(stage_dir: str | Path, name: str, extension: str) -> str:
    """``<stage_dir>/<name>.<extension>``, refusing any name that would leave the folder."""
    stage_dir = Path(stage_dir)
    candidate = stage_dir / f"{name}.{extension}"
    if "/" in name or name in (".", "..") or name.startswith(".") or candidate.parent != stage_dir:
        raise ValueError(f"file name {printable_name(name)!r} would leave {stage_dir}")
    return str(candidate)


@dataclass
class StageJob:
    """One Snakemake job: one stage over one batch, every path it reads and writes."""

    rule_name: str
    stage: str
    batch_id: str
    names: list[str]
    sources: list[str]  # input files (first stage) or the previous stage's outputs
    questions: list[str]  # sidecar question file per name, "" where there is none
    outputs: list[str]
    record: str  # the batch record, results/.../batches/<stage>/<batch>.json
    previous_record: list[str]  # the previous stage's record of this batch, if any
    settings: str
    manifest: str
    log: str


@dataclass
class PipelinePlan:
    """A pipeline as the workflow will run it."""

    name: str
    root: str  # results/<profile>/pipelines/<name>
    listing: InputListing
    stages: list[dict]  # {"name", "model", "settings": the stage's settings record}
    jobs: list[StageJob]

    @property
    def report(self) -> str:
        return f"{self.root}/REPORT.md"

    @property
    def inputs_record(self) -> str:
        return f"{self.root}/settings/inputs.json"

    def records(self) -> list[str]:
        """Every batch record of every stage."""
        return [job.record for job in self.jobs]


def plan_pipeline(config: dict, name: str, results_dir: str, models_root: str, logs_dir: str):
    """Stages, input files, batches and every path of pipeline ``name``."""
    from localbench.config import model_settings

    spec = config["pipelines"][name]
    root = f"{results_dir}/pipelines/{name}"
    stages = []
    for index, stage in enumerate(spec["stages"]):
        settings = stage_settings(config, name, index, model_settings(config, stage["model"]))
        stages.append({"name": stage["name"], "model": stage["model"], "settings": settings})
    first_task = stages[0]["settings"]["model"]["task"]
    kind = INPUT_KIND[first_task]
    vqa = first_task == "visual-question-answering"
    folder = spec["inputs"].rstrip("/") or "."
    listing = scan_inputs(folder, kind, sidecars=vqa)
    jobs = []
    for batch in stable_batches(listing.usable, spec.get("batch_size", 16)):
        previous: list[str] = []
        sources = [f"{folder}/{file_name}" for file_name in batch.names]
        for stage in stages:
            stage_dir = f"{root}/{stage['name']}"
            extension = stage["settings"]["extension"]
            record = f"{root}/batches/{stage['name']}/{batch.id}.json"
            questions = [""] * len(batch.names)
            if vqa and not previous:
                questions = [
                    str(path) if (path := sidecar_path(Path(folder), n)).is_file() else ""
                    for n in batch.names
                ]
            outputs = [output_path(stage_dir, n, extension) for n in batch.names]
            jobs.append(
                StageJob(
                    rule_name=f"run_{name}_{stage['name']}_{batch.id}",
                    stage=stage["name"],
                    batch_id=batch.id,
                    names=list(batch.names),
                    sources=sources,
                    questions=questions,
                    outputs=outputs,
                    record=record,
                    previous_record=previous,
                    settings=f"{root}/settings/{stage['name']}.json",
                    manifest=f"{models_root}/{stage['model']}/manifest.json",
                    log=f"{logs_dir}/pipelines/{name}/{stage['name']}/{batch.id}.log",
                )
            )
            sources, previous = outputs, [record]
    return PipelinePlan(name=name, root=root, listing=listing, stages=stages, jobs=jobs)

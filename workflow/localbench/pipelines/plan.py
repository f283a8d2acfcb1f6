"""The plan of a pipeline, made when Snakemake parses the workflow: stages, input files,
stable batches and output paths.

Nothing here loads a model or reads a file's content: a name or type problem is found
from the folder listing alone, so the report can name it without any job running.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from localbench.config import ConfigError
from localbench.results import one_line

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
# Files per job where a pipeline sets no batch_size: a stage runs as one job up to this
# many files (more are cut into stable batches of this size on average). A job has a
# fixed cost: starting Python, importing torch and transformers, loading the model,
# capturing the decoder, exiting (3-4 s on a 2-core CPU, 12-15 s on an H200 machine
# whose torch has no bytecode, less with localbench.engine.caches' bytecode cache), so
# fewer jobs cost less. An added file reruns its stage's job,
# but the files finished before are reused, not run again (localbench.pipelines.reuse):
# it costs one job's fixed cost and the new file's work.
FILES_PER_JOB = 1024
# Folders of a pipeline's own that a stage's output folder must not take.
RESERVED_STAGE_NAMES = {"batches", "settings", "reuse"}
# A stage's model settings: what decides its outputs, and what its job needs to fetch
# again a damaged checkpoint (allow_pickle); benchmark knobs are not among them, so
# changing how a model is benchmarked never reruns a pipeline.
MODEL_KEYS = (
    "name",
    "task",
    "repo",
    "revision",
    "allow_pickle",
    "dtype",
    "device",
    "weights",
    "size",
)
# Output file names are kept short enough for every common file system: the smallest
# common limit on a name is 143 bytes (eCryptfs home folders; ext4, APFS and NTFS allow
# 255), and the atomic writer's temporary file adds "." + "." + 8 random characters +
# ".tmp" to the name (localbench.atomic.write_bytes).
NAME_MAX_BYTES = 143
ATOMIC_TEMP_EXTRA_BYTES = len(".") + len(".") + 8 + len(".tmp")
MAX_OUTPUT_NAME_BYTES = NAME_MAX_BYTES - ATOMIC_TEMP_EXTRA_BYTES
# Hex digits of the input name's SHA-256 in a shortened output name: 64 bits, so two
# long names that share every byte of the kept prefix still get different output names.
NAME_HASH_DIGITS = 16
# Characters that end a line somewhere (a shell, a log, a Markdown table): C0 and C1
# controls, and Unicode's line and paragraph separators.
LINE_BREAKING_CATEGORIES = ("Cc", "Zl", "Zp")
# How a file that is not a regular file is named in a reason, by its st_mode test.
FILE_TYPE_NAMES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


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
    # Every stage runs through the engine: fast where the model supports it (the engine
    # falls back to eager and says why), decode_batch the most requests run together,
    # compile whether the fast decoders' captured steps are compiled first (not by
    # default: on a GPU compiling costs tens of seconds the first time on a machine,
    # more than it saves over a few hundred files).
    settings["backend"] = stage.get("backend", "fast")
    settings["compile"] = bool(stage.get("compile", False))
    if stage.get("decode_batch"):
        settings["decode_batch"] = stage["decode_batch"]
    if task == "text-generation":
        settings["prompt"] = stage["prompt"]
    if task == "visual-question-answering":
        settings["questions"] = list(spec.get("questions") or DEFAULT_QUESTIONS)
    if index > 0:
        settings["previous_stage"] = spec["stages"][index - 1]["name"]
    return settings


def printable_name(name: str) -> str:
    """A file name as one line of text that can be shown anywhere: undecodable bytes as
    \\x escapes, control characters and line breaks as Python escapes (\\n, \\u2028)."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in LINE_BREAKING_CATEGORIES
        else char
        for char in text
    )


def name_problem(name: str) -> str | None:
    """Why a file name cannot be used as part of an output path, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename the file"
    if any(unicodedata.category(char) in LINE_BREAKING_CATEGORIES for char in name):
        return "file name contains control characters (such as a newline); rename the file"
    if "{" in name or "}" in name:
        return "file name contains { or }, which Snakemake reads as a wildcard; rename the file"
    if "<" in name or ">" in name:
        return (
            "file name contains < or >, which Snakemake reads as a path variable; rename the file"
        )
    return None


def os_reason(error: OSError) -> str:
    """An operating-system error on a folder entry as a short reason."""
    if error.errno == errno.ELOOP:
        return "a symbolic link loop"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read (permission denied)"
    if error.errno == errno.ENAMETOOLONG:
        return "its path is too long for the file system"
    return f"cannot be read ({error.strerror or type(error).__name__})"


def file_problem(path: str, inside: str) -> str | None:
    """Why the entry ``path`` of the folder whose real path is ``inside`` cannot be read
    as one input file, or None: a regular, non-empty file that opens, or a link to one
    within the folder.

    Never raises and never follows a link out of the folder: a dangling link, a link
    loop, a FIFO, a socket, a device, a folder or a file that does not open each get
    their reason. Opening is non-blocking, so a FIFO never hangs the listing.
    """
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            try:
                target = os.path.realpath(path, strict=True)
            except OSError as error:
                if error.errno == errno.ENOENT:
                    return "a link to nothing (its target does not exist)"
                return os_reason(error)
            if target == inside or os.path.commonpath([inside, target]) != inside:
                # A link may point anywhere (~/.ssh, /etc): only files of the folder are read.
                return "a link pointing outside the folder"
            info = os.stat(target)
        if stat.S_ISDIR(info.st_mode):
            return "a folder, not a file"
        if not stat.S_ISREG(info.st_mode):
            type_name = next((n for is_type, n in FILE_TYPE_NAMES if is_type(info.st_mode)), None)
            return f"{type_name or 'something'}, not a regular file"
        if info.st_size == 0:
            return "empty file (0 bytes)"
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as error:
        return os_reason(error)
    return None


def sidecar_path(folder: Path, name: str) -> Path:
    """Where an image's questions live: ``<image stem>.txt`` beside it."""
    return folder / f"{Path(name).stem}.txt"


@dataclass
class InputListing:
    """The usable files of an input folder, the rejected ones with reasons, and a note
    when the folder holds nothing to run; ``questions`` are the usable question files
    (visual question answering), which are not inputs themselves."""

    folder: str
    kind: str
    usable: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    note: str | None = None
    questions: set[str] = field(default_factory=set)

    def reject(self, name: str, reason: str) -> None:
        """Record ``name`` as a failed input with ``reason`` (it is no longer usable)."""
        if name in self.usable:
            self.usable.remove(name)
        self.rejected.append({"name": printable_name(name), "reason": reason})

    def to_dict(self) -> dict:
        return {
            "folder": self.folder,
            "kind": self.kind,
            "usable": self.usable,
            "rejected": self.rejected,
            "note": self.note,
        }


def _folder_note(folder: str, kind: str, expected: str) -> str | None:
    """Why ``folder`` cannot be listed at all, or None."""
    shown = printable_name(folder)
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        if os.path.lexists(folder):
            return f"{shown} is a link to nothing (its target does not exist)"
        return f"{shown}/ does not exist: put {kind} files there ({expected})"
    except OSError as error:
        return f"{shown} cannot be used: {os_reason(error)}"
    except ValueError:  # os.stat refuses a path holding a NUL byte
        return f"{shown} cannot be used: the path holds a NUL byte"
    if not stat.S_ISDIR(info.st_mode):
        return f"{shown} is not a folder"
    return None


def scan_inputs(folder: str, kind: str, sidecars: bool = False) -> InputListing:
    """List ``folder``'s files (not subfolders, not hidden files) for a pipeline reading
    ``kind``; with ``sidecars``, ``.txt`` files are questions, not inputs.

    Never raises for what the folder holds: an entry that cannot be used is rejected
    with its reason, a folder that cannot be listed gets a note.
    """
    listing = InputListing(folder=folder, kind=kind)
    extensions = KIND_EXTENSIONS[kind]
    expected = ", ".join(ext.lstrip(".") for ext in extensions)
    if note := _folder_note(folder, kind, expected):
        listing.note = note
        return listing
    try:
        inside = os.path.realpath(folder, strict=True)
        entries = sorted((entry.name, entry.path) for entry in os.scandir(folder))
    except OSError as error:
        listing.note = f"{printable_name(folder)}/ cannot be listed: {os_reason(error)}"
        return listing
    for name, path in entries:
        if name.startswith("."):
            continue
        suffix = Path(name).suffix.lower()
        try:
            real_folder = stat.S_ISDIR(os.lstat(path).st_mode)
        except OSError as error:
            listing.reject(name, os_reason(error))
            continue
        if real_folder and suffix not in extensions:
            continue  # subfolders are not read
        if sidecars and suffix == ".txt":
            if (reason := file_problem(path, inside)) is None:
                listing.questions.add(name)
            else:
                listing.reject(name, f"question file: {reason}")
            continue
        reason = name_problem(name)
        if reason is None and suffix not in extensions:
            found = f"extension {suffix!r}" if suffix else "no extension"
            article = "an" if kind[0] in "aei" else "a"
            reason = f"not {article} {kind} file: {found} (expected {expected})"
        if reason is None:
            reason = file_problem(path, inside)
        if reason is None:
            listing.usable.append(name)
        else:
            listing.reject(name, reason)
    if not listing.usable and not listing.rejected:
        listing.note = (
            f"{printable_name(folder)}/ holds no files: put {kind} files there ({expected})"
        )
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


def job_batches(names: list[str], batch_size: int | None) -> list[Batch]:
    """The jobs of a pipeline's files: ``batch_size`` files each on average when the
    pipeline sets it (stable batches: an added file changes only its own), else one job
    of every file up to :data:`FILES_PER_JOB` (stable batches of that size beyond)."""
    if batch_size is None:
        if len(names) <= FILES_PER_JOB:
            return [_batch(sorted(names))] if names else []
        batch_size = FILES_PER_JOB
    return stable_batches(names, batch_size)


def _batch(names: list[str]) -> Batch:
    first = hashlib.sha256(names[0].encode("utf-8")).hexdigest()
    return Batch(id=f"b{first[:10]}", names=tuple(names))


def _truncate_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form has at most ``limit`` bytes."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def output_name(name: str, extension: str) -> str:
    """The output file name for input file ``name``: ``<name>.<extension>``, or, when
    that is longer than MAX_OUTPUT_NAME_BYTES, a prefix of the name's stem, ``~``, 16
    hex digits of the whole name's SHA-256, the name's own suffix and ``.<extension>``
    (``Meeting about…~3fa2c0d1e4b5a6c7.m4a.txt``).

    The same name gives the same output name on every run and machine; names that share
    a long prefix differ in their hash.
    """
    full = f"{name}.{extension}"
    if len(full.encode("utf-8")) <= MAX_OUTPUT_NAME_BYTES:
        return full
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    suffix = Path(name).suffix
    tail = f"~{digest[:NAME_HASH_DIGITS]}{suffix}.{extension}"
    if len(tail.encode("utf-8")) > MAX_OUTPUT_NAME_BYTES // 2:
        suffix, tail = "", f"~{digest[:NAME_HASH_DIGITS]}.{extension}"  # a "suffix" of 60+ bytes
    stem = name[: len(name) - len(suffix)] if suffix else name
    return _truncate_utf8(stem, MAX_OUTPUT_NAME_BYTES - len(tail.encode("utf-8"))) + tail


def output_path(stage_dir: str | Path, name: str, extension: str) -> str:
    """``<stage_dir>/<output name>``, refusing any name that would leave the folder."""
    stage_dir = Path(stage_dir)
    candidate = stage_dir / output_name(name, extension)
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
    reuse: str  # the stage's finished files, kept by content (localbench.pipelines.reuse)


def pipeline_root(results_dir: str, name: str) -> str:
    """Pipeline ``name``'s results folder: results/<profile>/pipelines/<name>."""
    return f"{results_dir}/pipelines/{name}"


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


def _plan_outputs(
    listing: InputListing, stage_dirs: dict[str, tuple[str, str]]
) -> dict[str, dict[str, str]]:
    """Every usable file's output path per stage (``stage_dirs``: stage name to its folder
    and extension), within each file's own failure boundary: a file whose output path
    cannot be made, or would be another file's, is rejected with the reason."""
    planned: dict[str, dict[str, str]] = {}
    owners: dict[str, str] = {}  # output path to the input file that writes it
    for file_name in list(listing.usable):
        try:
            paths = {
                stage: output_path(stage_dir, file_name, extension)
                for stage, (stage_dir, extension) in stage_dirs.items()
            }
            for path in paths.values():
                if path in owners:
                    raise ValueError(
                        f"its output file {Path(path).name!r} is already that of "
                        f"{printable_name(owners[path])!r}; rename one of them"
                    )
        except (ValueError, OSError, UnicodeError) as error:
            listing.reject(file_name, str(error))
            continue
        owners.update(dict.fromkeys(paths.values(), file_name))
        planned[file_name] = paths
    return planned


def plan_pipeline(
    config: dict,
    name: str,
    results_dir: str,
    models_root: str,
    logs_dir: str,
):
    """Stages, input files, batches (:func:`job_batches`) and every path of pipeline
    ``name``.

    A file that cannot be planned is rejected in the listing with its reason; the
    others are planned as usual.
    """
    from localbench.config import model_settings

    spec = config["pipelines"][name]
    root = pipeline_root(results_dir, name)
    stages = []
    for index, stage in enumerate(spec["stages"]):
        settings = stage_settings(config, name, index, model_settings(config, stage["model"]))
        stages.append({"name": stage["name"], "model": stage["model"], "settings": settings})
    first_task = stages[0]["settings"]["model"]["task"]
    kind = INPUT_KIND[first_task]
    vqa = first_task == "visual-question-answering"
    folder = spec["inputs"].rstrip("/") or "/"
    listing = scan_inputs(folder, kind, sidecars=vqa)
    outputs_of = _plan_outputs(
        listing,
        {s["name"]: (f"{root}/{s['name']}", s["settings"]["extension"]) for s in stages},
    )
    jobs = []
    for batch in job_batches(listing.usable, spec.get("batch_size")):
        previous: list[str] = []
        sources = [os.path.join(folder, file_name) for file_name in batch.names]
        for stage in stages:
            record = f"{root}/batches/{stage['name']}/{batch.id}.json"
            questions = [""] * len(batch.names)
            if vqa and not previous:
                questions = [
                    os.path.join(folder, question)
                    if (question := sidecar_path(Path(folder), n).name) in listing.questions
                    else ""
                    for n in batch.names
                ]
            outputs = [outputs_of[n][stage["name"]] for n in batch.names]
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
                    reuse=f"{root}/reuse/{stage['name']}",
                )
            )
            sources, previous = outputs, [record]
    return PipelinePlan(name=name, root=root, listing=listing, stages=stages, jobs=jobs)


def plan_pipelines(
    config: dict, results_dir: str, models_root: str, logs_dir: str
) -> tuple[dict[str, PipelinePlan], dict[str, str]]:
    """The plan of every enabled pipeline, and one line for each enabled pipeline that is
    not run: a stage's model is not configured, or planning it failed.

    Called when Snakemake parses the workflow, for every target: no error in one
    pipeline's planning is raised, so it can never stop ``report`` or another pipeline.
    """
    missing = missing_models(config)
    plans: dict[str, PipelinePlan] = {}
    not_run: dict[str, str] = {}
    for name, spec in (config.get("pipelines") or {}).items():
        if not spec.get("enabled", True):
            continue
        if name in missing:
            not_run[name] = missing[name]
            continue
        try:
            plans[name] = plan_pipeline(config, name, results_dir, models_root, logs_dir)
        except Exception as error:  # noqa: BLE001 - one pipeline's problem stops only it
            not_run[name] = f"{name}: not run: planning failed: {printable_name(one_line(error))}"
    return plans, not_run

"""Files a stage has finished, kept by content, so that a job run again does only new work.

A stage runs as one job over its files (:mod:`localbench.pipelines.plan`). Adding a file
reruns that job, and Snakemake deletes the job's outputs first. So each file that a
stage finishes (``done``) is kept in ``<pipeline results>/reuse/<stage>/``, under a key
of everything its output depends on:

- the stage's settings (model, prompt, token budget, backend, ...);
- the model's manifest (a model fetched or built again is a new key);
- the code: this library's sources and the versions of torch and transformers;
- the file's name (a prompt may quote it) and the bytes it reads (and of its questions
  file).

A job looks here first. A file found gets its output from here, and its record says
``reused_from`` (the batch and time it was measured in); only the other files reach the
model, which is not loaded at all when none do. Reports count reused files apart and
never take their timings as this run's. A job that was stopped keeps what it finished.
To compute every file again, delete the ``reuse`` folder.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import metadata
from pathlib import Path

from localbench.atomic import write_json
from localbench.status import DONE

LIBRARY = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers")
CHUNK = 1 << 20


@cache
def code_identity() -> str:
    """A digest of this library's sources and the versions of :data:`PACKAGES`."""
    digest = hashlib.sha256()
    for path in sorted(LIBRARY.rglob("*")):
        if path.suffix in (".py", ".cpp") and path.is_file():
            digest.update(str(path.relative_to(LIBRARY)).encode() + b"\0" + path.read_bytes())
    for package in PACKAGES:
        try:
            digest.update(f"{package}=={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{package} missing".encode())
    return digest.hexdigest()


def _file_digest(path: str | None) -> str | None:
    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class FinishedFiles:
    """The kept files of one stage: :meth:`find` before running a file, :meth:`keep`
    once it is done; a file is a :class:`~localbench.pipelines.batch.BatchItem` (its
    ``name``, ``source``, ``questions`` and ``output``). Never raises: a file that cannot
    be read or kept is simply run."""

    def __init__(self, folder: str | Path, settings: dict, manifest: dict) -> None:
        self.folder = Path(folder)
        stage = json.dumps(
            {"settings": settings, "manifest": manifest, "code": code_identity()},
            sort_keys=True,
            default=str,
        )
        self._stage = hashlib.sha256(stage.encode()).hexdigest()
        self._keys: dict[tuple, str | None] = {}  # a file's bytes are read once per job

    def key(self, item) -> str | None:
        file = (item.name, item.source, item.questions)
        if file not in self._keys:
            try:
                digests = [_file_digest(item.source), _file_digest(item.questions)]
                self._keys[file] = hashlib.sha256(
                    json.dumps([self._stage, item.name, *digests]).encode()
                ).hexdigest()
            except OSError:
                self._keys[file] = None
        return self._keys[file]

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def find(self, item) -> dict | None:
        """The record kept for ``item``, as this run's (its ``output``), or None."""
        key = self.key(item)
        if key is None:
            return None
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
            record, measured = entry["record"], entry["measured"]
            if (
                entry["key"] != key
                or record["status"] != DONE
                or record["name"] != item.name
                or not isinstance(record["text"], str)
            ):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return {**record, "output": item.output, "reused_from": measured}

    def keep(self, item, record: dict, measured: dict) -> None:
        """Keep ``record`` (done) of ``item``; ``measured`` says where it was done:
        ``{"batch", "started_at"}``."""
        key = self.key(item)
        if key is None or record.get("status") != DONE or "reused_from" in record:
            return
        try:
            write_json(self._path(key), {"key": key, "record": record, "measured": measured})
        except OSError:
            pass

"""Archives of a profile's results: never overwritten, never holding secrets or links.

``archive/<profile>/<timestamp>-<config hash>.tar.gz`` holds the profile's result files,
CSV, summary, chart, hardware and warm-up records, the resolved settings of every job
and the model manifests; ``archive/index.csv`` gets one line per archive. Reading them
back, from whoever made them, is :mod:`localbench.report.archive_reader`'s.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import tarfile
from pathlib import Path

from localbench.atomic import write_text

INDEX_FIELDS = ["created_at", "profile", "config_hash", "path", "results", "measured"]


def config_hash(settings_files: list[Path]) -> str:
    """Short hash of the canonical settings files (their names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(settings_files):
        digest.update(path.as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _add_tree(archive: tarfile.TarFile, folder: Path, prefix: str) -> int:
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue  # links could point anywhere: never archived
        archive.add(
            path, arcname=f"{prefix}/{path.relative_to(folder).as_posix()}", recursive=False
        )
        count += 1
    return count


def create_archive(
    results_dir: Path,
    manifests: list[Path],
    archive_root: Path,
    profile: str,
    measured: int,
    results: int,
    now: dt.datetime | None = None,
) -> Path:
    """Write a new archive of ``results_dir`` and append it to the index; return its path."""
    now = now or dt.datetime.now(dt.UTC)
    digest = config_hash(list((results_dir / "settings").rglob("*.json")))
    folder = archive_root / profile
    folder.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = folder / f"{stamp}-{digest}.tar.gz"
    suffix = 1
    while target.exists():  # never overwrite, even within one second
        target = folder / f"{stamp}-{digest}-{suffix}.tar.gz"
        suffix += 1
    partial = target.with_name(f".{target.name}.partial")
    with tarfile.open(partial, "w:gz") as archive:
        _add_tree(archive, results_dir, "results")
        for manifest in manifests:
            if manifest.is_file() and not manifest.is_symlink():
                archive.add(manifest, arcname=f"models/{manifest.parent.name}/manifest.json")
        info = tarfile.TarInfo("ARCHIVE.txt")
        text = (
            f"profile: {profile}\ncreated_at: {now.isoformat()}\nconfig_hash: {digest}\n".encode()
        )
        info.size = len(text)
        archive.addfile(info, io.BytesIO(text))
    os.replace(partial, target)
    index = archive_root / "index.csv"
    # Rewritten whole through a rename, never appended to: a run killed mid-write cannot
    # leave a half line in it.
    lines = index.read_text(encoding="utf-8") if index.exists() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_FIELDS, lineterminator="\n")
    if not lines:
        writer.writeheader()
    writer.writerow(
        {
            "created_at": now.isoformat(timespec="seconds"),
            "profile": profile,
            "config_hash": digest,
            "path": target.relative_to(archive_root).as_posix(),
            "results": results,
            "measured": measured,
        }
    )
    write_text(index, lines + buffer.getvalue())
    return target

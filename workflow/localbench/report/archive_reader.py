"""Reading archives that anyone may have dropped into ``archive/<profile>/``.

Every archive is read on its own and trusted in nothing: a bad one is refused with one
reason (:class:`ArchiveRefused`) and never costs the others. Only regular files are
opened, never through a symlink and never blocking (a FIFO named ``x.tar.gz`` is refused,
not read). Every member is checked as tarfile's ``data`` filter would, more strictly:
plain files and folders only, relative names without ``..``; links, devices and FIFOs are
refused, since the archives this project writes never hold them. Sizes are bounded
before anything is read: :data:`MAX_READ_BYTES` for a member that is read (and for a tar
header, which tarfile reads whole) and :data:`MAX_UNPACKED_BYTES` for the archive
unpacked, so a member of 2 GB is refused from its header, never read.
"""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import io
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

ARCHIVE_SUFFIX = ".tar.gz"
INFO_MEMBER = "ARCHIVE.txt"
TABLE_MEMBER = "results/benchmarks.csv"
# One result file per model and backend: results/benchmarks/<model>/<backend>.json.
RESULT_MEMBER = re.compile(r"results/benchmarks/[^/]+/[^/]+\.json")
# The members read are a few kilobytes (one CSV row per model and backend); 4 MiB
# leaves room for hundreds of models and still keeps a hostile member out of memory.
MAX_READ_BYTES = 4 * 2**20
# An archive holds one profile's result files; 1 GiB unpacked is far beyond a real one
# and bounds the time spent decompressing a hostile one.
MAX_UNPACKED_BYTES = 2**30
MAX_MEMBERS = 100_000
# All the members read from one archive together: its result files with their raw
# samples are a few megabytes at most for a real profile.
MAX_READ_TOTAL_BYTES = 64 * 2**20
# The longest name shown in a reason: a tar member name can be megabytes long.
SHOWN_CHARS = 80


class ArchiveRefused(Exception):
    """An archive that is not read, with the one reason why (the message)."""


@dataclass(frozen=True)
class SkippedArchive:
    """An archive (or table) left out of the comparison, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class ArchivedTable:
    """What the comparison takes from one archive."""

    path: Path
    profile: str
    created_at: dt.datetime
    table: bytes
    # The result files by member name, when they were asked for (``read_archive``).
    results: dict[str, bytes] = field(default_factory=dict)


def shown(text: str) -> str:
    """``text`` quoted for a reason, cut to :data:`SHOWN_CHARS` characters."""
    if len(text) > SHOWN_CHARS:
        return repr(text[:SHOWN_CHARS]) + "..."
    return repr(text)


def size_label(count: int) -> str:
    """A byte count for a reason: ``4 MiB`` when exact, else ``4,194,405 bytes``, so that
    a size just over a bound never reads as the bound itself."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count:,} bytes"


def file_kind(mode: int) -> str:
    """What kind of file ``mode`` (from ``lstat``) is, in words."""
    kinds = {
        stat.S_ISREG: "a regular file",
        stat.S_ISLNK: "a symlink",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISDIR: "a folder",
    }
    return next((word for test, word in kinds.items() if test(mode)), "an unknown kind of file")


def find_archives(root: Path) -> tuple[list[Path], list[SkippedArchive]]:
    """The archives ``root/<profile>/*.tar.gz`` that may be read, and the entries of that
    pattern that are not read, with why: nothing is followed through a symlink (an
    ``lstat`` of every entry), and only regular files are taken, so listing never blocks."""
    found: list[Path] = []
    skipped: list[SkippedArchive] = []
    try:
        root_mode = root.lstat().st_mode
    except FileNotFoundError:
        return found, skipped
    except OSError as error:
        return found, [SkippedArchive(str(root), f"cannot be listed: {error.strerror}")]
    if not stat.S_ISDIR(root_mode):
        reason = f"{file_kind(root_mode)}, not a folder: not followed"
        return found, [SkippedArchive(str(root), reason)]
    for folder, folder_mode in _entries(root, skipped):
        if stat.S_ISLNK(folder_mode):
            skipped.append(SkippedArchive(str(folder), "a symlink, not followed"))
        if not stat.S_ISDIR(folder_mode):
            continue  # archive/index.csv and other files beside the profile folders
        for entry, mode in _entries(folder, skipped):
            if entry.name.startswith(".") or not entry.name.endswith(ARCHIVE_SUFFIX):
                continue  # hidden files and partial writes, as a glob leaves them out
            if stat.S_ISREG(mode):
                found.append(entry)
            else:
                reason = f"{file_kind(mode)}, not a regular file: not read"
                skipped.append(SkippedArchive(str(entry), reason))
    return sorted(found), sorted(skipped, key=lambda s: s.path)


def _entries(folder: Path, skipped: list[SkippedArchive]) -> list[tuple[Path, int]]:
    """The entries of ``folder`` with their ``lstat`` modes; what cannot be listed or
    looked at is added to ``skipped``."""
    listed = []
    try:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError as error:
        skipped.append(SkippedArchive(str(folder), f"cannot be listed: {error.strerror}"))
        return []
    for name in names:
        try:
            listed.append((folder / name, (folder / name).lstat().st_mode))
        except OSError as error:
            skipped.append(SkippedArchive(str(folder / name), f"cannot be read: {error.strerror}"))
    return listed


@contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading if it is a regular file reached without following a
    symlink at its end; :class:`ArchiveRefused` otherwise. Opening never blocks, even on a
    FIFO with no writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ArchiveRefused("a symlink, not followed") from None
        raise ArchiveRefused(f"cannot be opened: {error.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ArchiveRefused(f"{file_kind(mode)}, not a regular file: not read")
    with os.fdopen(fd, "rb") as handle:
        yield handle


def read_bounded(path: Path) -> bytes:
    """A regular file's bytes, refused when larger than :data:`MAX_READ_BYTES`."""
    with open_regular(path) as handle:
        data = handle.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise ArchiveRefused(f"larger than {size_label(MAX_READ_BYTES)}: not read")
    return data


class BoundedStream:
    """A decompressed stream that refuses to move past ``limit`` bytes in all, or to hand
    out more than ``largest_read`` bytes in one read: tarfile reads a long name or a pax
    header whole, at whatever size its header claims, before any member is seen."""

    def __init__(self, stream: BinaryIO, limit: int, largest_read: int) -> None:
        self.stream = stream
        self.limit = limit
        self.largest_read = largest_read

    def tell(self) -> int:
        return self.stream.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        if offset > self.limit:
            raise ArchiveRefused(f"more than {size_label(self.limit)} once unpacked")
        return self.stream.seek(offset)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.largest_read + tarfile.BLOCKSIZE:
            shown_size = "an unbounded" if size is None or size < 0 else size_label(size)
            raise ArchiveRefused(
                f"a tar header or member of {shown_size}, over the "
                f"{size_label(self.largest_read)} one may have"
            )
        if self.tell() + size > self.limit:
            raise ArchiveRefused(f"more than {size_label(self.limit)} once unpacked")
        return self.stream.read(size)


def check_member(member: tarfile.TarInfo) -> str:
    """The member's name, normalised (``./a//b`` is ``a/b``); :class:`ArchiveRefused` for
    a name that is absolute or climbs with ``..``, and for anything but a plain file or a
    folder: links (inside or out), FIFOs, devices, sparse files."""
    name = member.name
    if not name or name.startswith("/"):
        raise ArchiveRefused(f"member {shown(name)} has an absolute or empty path")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise ArchiveRefused(f"member {shown(name)} climbs out of the archive with '..'")
    if member.issym():
        raise ArchiveRefused(f"member {shown(name)} is a symlink (to {shown(member.linkname)})")
    if member.islnk():
        raise ArchiveRefused(f"member {shown(name)} is a hard link (to {shown(member.linkname)})")
    if member.isfifo():
        raise ArchiveRefused(f"member {shown(name)} is a FIFO")
    if member.ischr() or member.isblk():
        raise ArchiveRefused(f"member {shown(name)} is a device")
    if member.issparse():
        raise ArchiveRefused(f"member {shown(name)} is a sparse file")
    if not (member.isfile() or member.isdir()):
        raise ArchiveRefused(f"member {shown(name)} is a special file (type {member.type!r})")
    return PurePosixPath(name).as_posix()


def wanted_members(
    archive: tarfile.TarFile, wanted: set[str] | Callable[[str], bool]
) -> dict[str, bytes]:
    """The bytes of the ``wanted`` members (a set of names, or a test of a name), every
    member checked on the way; the walk stops at the first refusal, so nothing after a
    bad member is read. Together they are at most :data:`MAX_READ_TOTAL_BYTES`."""
    is_wanted = wanted if callable(wanted) else wanted.__contains__
    found: dict[str, bytes] = {}
    total = 0
    last = None
    for count, member in enumerate(archive, start=1):
        if count > MAX_MEMBERS:
            raise ArchiveRefused(f"more than {MAX_MEMBERS} members")
        name = check_member(member)
        if member.offset_data + member.size > MAX_UNPACKED_BYTES:
            raise ArchiveRefused(
                f"member {shown(name)} of {size_label(member.size)} takes the archive past "
                f"{size_label(MAX_UNPACKED_BYTES)} unpacked"
            )
        if is_wanted(name):
            if name in found:
                raise ArchiveRefused(f"holds {name} twice")
            if not member.isfile():
                raise ArchiveRefused(f"{name} is not a file")
            if member.size > MAX_READ_BYTES:
                raise ArchiveRefused(
                    f"{name} is {size_label(member.size)}, over the "
                    f"{size_label(MAX_READ_BYTES)} a member that is read may have"
                )
            total += member.size
            if total > MAX_READ_TOTAL_BYTES:
                raise ArchiveRefused(
                    f"the members read take more than {size_label(MAX_READ_TOTAL_BYTES)} "
                    f"(at {shown(name)})"
                )
            found[name] = archive.extractfile(member).read(member.size)
        last = name
    check_end(archive, last)
    return found


def check_end(archive: tarfile.TarFile, last: str | None) -> None:
    """:class:`ArchiveRefused` unless the member walk ended on the block of zeros that
    ends a whole tar: tarfile takes a truncated header, or garbage after the first member,
    for the end of the archive."""
    archive.fileobj.seek(archive.offset)
    block = archive.fileobj.read(tarfile.BLOCKSIZE)
    after = f"after member {shown(last)}" if last else "before any member"
    if len(block) < tarfile.BLOCKSIZE:
        raise ArchiveRefused(f"truncated: the tar data ends {after}")
    if block != tarfile.NUL * tarfile.BLOCKSIZE:
        raise ArchiveRefused(f"corrupt tar data {after} (an invalid header)")


def read_members(handle: BinaryIO, wanted: set[str] | Callable[[str], bool]) -> dict[str, bytes]:
    """The ``wanted`` members of a ``.tar.gz`` read from ``handle``, every member checked;
    every failure is an :class:`ArchiveRefused` that says what is wrong."""
    try:
        with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
            stream = BoundedStream(unzipped, MAX_UNPACKED_BYTES, MAX_READ_BYTES)
            with tarfile.TarFile(fileobj=stream, mode="r") as archive:
                found = wanted_members(archive, wanted)
    except gzip.BadGzipFile:
        raise ArchiveRefused("not a gzip file") from None
    except EOFError:
        raise ArchiveRefused("truncated: the compressed data ends early") from None
    except zlib.error as error:
        raise ArchiveRefused(f"corrupt compressed data ({error})") from None
    except tarfile.ReadError as error:
        message = str(error)
        if message in ("empty file", "unexpected end of data", "truncated header"):
            raise ArchiveRefused(f"truncated or empty tar data ({message})") from None
        if message.startswith("zlib error"):
            raise ArchiveRefused(f"corrupt compressed data ({message})") from None
        raise ArchiveRefused(f"a gzip file but not a tar archive ({message})") from None
    except tarfile.TarError as error:
        raise ArchiveRefused(f"not a readable tar archive ({error})") from None
    return found


def parse_info(data: bytes) -> dict[str, str]:
    """The ``key: value`` lines of ARCHIVE.txt; a key given twice is refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ArchiveRefused(f"{INFO_MEMBER} is not UTF-8 text ({error.reason})") from None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ": " not in line:
            continue
        key, value = line.split(": ", 1)
        if key in fields:
            raise ArchiveRefused(f"{INFO_MEMBER} gives {shown(key)} twice")
        fields[key] = value.strip()
    return fields


def parse_created_at(text: str | None) -> dt.datetime:
    """ARCHIVE.txt's ``created_at`` as a time in UTC (a time without a zone is UTC)."""
    if not text:
        raise ArchiveRefused(f"{INFO_MEMBER} gives no created_at")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ArchiveRefused(
            f"{INFO_MEMBER}: created_at {shown(text)} is not an ISO date and time"
        ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def read_archive(path: Path, with_results: bool = False) -> ArchivedTable:
    """The profile, creation time and ``results/benchmarks.csv`` bytes of one archive,
    and with ``with_results`` its result files (``results/benchmarks/<model>/<backend>.json``).

    The profile is the folder the archive sits in; an ``ARCHIVE.txt`` naming another one
    refuses the archive, so an archive dropped into ``archive/other/`` can never stand in
    for ``victim``'s figures. Raises :class:`ArchiveRefused` with the one reason.
    """
    profile = path.parent.name
    names = {INFO_MEMBER, TABLE_MEMBER}

    def wanted(name: str) -> bool:
        return name in names or (with_results and RESULT_MEMBER.fullmatch(name) is not None)

    with open_regular(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ArchiveRefused("an empty file")
        members = read_members(handle, wanted)
    if INFO_MEMBER not in members:
        raise ArchiveRefused(f"holds no {INFO_MEMBER}")
    fields = parse_info(members[INFO_MEMBER])
    claimed = fields.get("profile")
    if not claimed:
        raise ArchiveRefused(f"{INFO_MEMBER} names no profile")
    if claimed != profile:
        raise ArchiveRefused(
            f"{INFO_MEMBER} says profile {shown(claimed)}, but the archive sits in the "
            f"folder of profile {shown(profile)}"
        )
    created_at = parse_created_at(fields.get("created_at"))
    if TABLE_MEMBER not in members:
        raise ArchiveRefused(f"holds no {TABLE_MEMBER}")
    results = {name: data for name, data in members.items() if name not in names}
    return ArchivedTable(path, profile, created_at, members[TABLE_MEMBER], results)

"""Hostile archives and names: one bad archive never costs the others their comparison.

Every hostile file is generated here. Each kind of bad archive sits beside a good one:
the bad one is listed under "Skipped archives" with a reason naming what is wrong, the
good one is still compared, and COMPARISON.md is written (never deleted).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import random
import re
import tarfile
import threading
from pathlib import Path

import pytest
from conftest import snakemake
from localbench.atomic import write_text
from localbench.pipelines.report import render_report, report_context
from localbench.report.archive import create_archive
from localbench.report.archive_reader import (
    MAX_READ_BYTES,
    ArchiveRefused,
    find_archives,
    read_archive,
)
from localbench.report.compare import comparison_context, gather, render_comparison
from localbench.report.summary import md, render_summary, summary_context

GOOD = "good-machine"
HEADER = "model,backend,task,status,synthetic,decode_tokens_per_s_median,peak_memory_bytes\n"
TABLE = HEADER + "tiny-llm,eager,text-generation,measured,False,12.5,2000000000\n"
CREATED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
# Bounds a hang (a FIFO read, say) so that it fails the test instead of blocking it.
HANG_GUARD_S = 120
NOISE = random.Random(14).randbytes(4096)  # the same "random bytes" in every run


def good_archive(workdir: Path, profile: str, table: str = TABLE, now=CREATED) -> Path:
    """An archive made by the project's own writer, of a one-row benchmarks.csv."""
    results = workdir / "made" / profile / now.strftime("%H%M%S")
    results.mkdir(parents=True)
    (results / "benchmarks.csv").write_text(table)
    return create_archive(results, [], workdir / "archive", profile, 1, 1, now=now)


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def valid_members(
    profile: str, table: str = TABLE, created: str = CREATED.isoformat()
) -> list[tuple[tarfile.TarInfo, bytes]]:
    """What an archive needs: ARCHIVE.txt naming ``profile`` and a benchmarks.csv (a
    lone surrogate in either becomes the undecodable byte it stands for)."""
    info = f"profile: {profile}\ncreated_at: {created}\nconfig_hash: 0\n"
    return [
        file_member("ARCHIVE.txt", info.encode(errors="surrogateescape")),
        file_member("results/benchmarks.csv", table.encode(errors="surrogateescape")),
    ]


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def write_tar_gz(folder: Path, members: list, name: str = "x.tar.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(gzip.compress(tar_bytes(members)))
    return folder / name


def write_raw(folder: Path, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.tar.gz").write_bytes(data)
    return folder / "x.tar.gz"


def with_member(folder: Path, extra: tuple) -> Path:
    """A valid archive with one more member, placed before the table is reached."""
    return write_tar_gz(folder, [extra, *valid_members(folder.name)])


def huge_header(folder: Path, kind: bytes, size: int) -> Path:
    """A header that claims ``size`` bytes (of a member or a pax header) and no data:
    2 GB is never written, only claimed, as a hostile archive would."""
    info = tarfile.TarInfo("results/benchmarks.csv" if kind == tarfile.REGTYPE else "././@x")
    info.type = kind
    info.size = size
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    first = tar_bytes(valid_members(folder.name)[:1])[:1024]  # its header, its data
    return write_raw(folder, gzip.compress(first + header))


def truncated_gzip(folder: Path, outside: Path) -> Path:
    data = good_archive(outside, folder.name).read_bytes()
    return write_raw(folder, data[: len(data) // 2])


def truncated_tar(folder: Path, _outside: Path) -> Path:
    data = tar_bytes(valid_members(folder.name, TABLE * 20))
    return write_raw(folder, gzip.compress(data[: 512 + 512 + 700]))


def garbage_after_a_member(folder: Path, _outside: Path) -> Path:
    member = tar_bytes(valid_members(folder.name)[:1])[:1024]  # its header, its data
    return write_raw(folder, gzip.compress(member + NOISE))


def spoofed_profile(folder: Path, _outside: Path) -> Path:
    return write_tar_gz(folder, valid_members("victim-machine"))


def fifo_archive(folder: Path, _outside: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "x.tar.gz")
    return folder / "x.tar.gz"


def symlinked_archive(folder: Path, outside: Path) -> Path:
    """A link to a good archive outside the project, which must not be followed."""
    target = good_archive(outside, folder.name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.tar.gz").symlink_to(target)
    return folder / "x.tar.gz"


def symlinked_folder(folder: Path, outside: Path) -> Path:
    good_archive(outside, folder.name)
    folder.symlink_to(outside / "archive" / folder.name)
    return folder


def folder_named_like_an_archive(folder: Path, _outside: Path) -> Path:
    (folder / "x.tar.gz").mkdir(parents=True)
    return folder / "x.tar.gz"


# Each kind: how to make it in archive/<kind>/, and the words its reason must hold.
HOSTILE = {
    "truncated-gzip": (truncated_gzip, "truncated"),
    "truncated-tar": (truncated_tar, "truncated"),
    "random-bytes": (lambda f, _o: write_raw(f, NOISE), "not a gzip file"),
    "gzip-not-tar": (lambda f, _o: write_raw(f, gzip.compress(NOISE)), "not a tar"),
    "gzip-of-nothing": (lambda f, _o: write_raw(f, gzip.compress(b"")), "empty tar data"),
    "empty-file": (lambda f, _o: write_raw(f, b""), "an empty file"),
    "garbage-after-member": (garbage_after_a_member, "corrupt tar data"),
    "dotdot-member": (
        lambda f, _o: with_member(f, file_member("results/../../outside.txt", b"x")),
        "climbs out",
    ),
    "absolute-member": (
        lambda f, _o: with_member(f, file_member("/etc/cron.d/evil", b"x")),
        "absolute",
    ),
    "symlink-member-out": (
        lambda f, _o: with_member(
            f, special_member("results/notes", tarfile.SYMTYPE, "/etc/passwd")
        ),
        "is a symlink",
    ),
    "symlink-member-inside": (
        lambda f, _o: with_member(
            f, special_member("results/a", tarfile.SYMTYPE, "benchmarks.csv")
        ),
        "is a symlink",
    ),
    "hardlink-member": (
        lambda f, _o: with_member(f, special_member("results/h", tarfile.LNKTYPE, "/etc/shadow")),
        "hard link",
    ),
    "fifo-member": (
        lambda f, _o: with_member(f, special_member("results/p", tarfile.FIFOTYPE)),
        "FIFO",
    ),
    "device-member": (
        lambda f, _o: with_member(f, special_member("results/d", tarfile.CHRTYPE)),
        "device",
    ),
    "table-twice": (
        lambda f, _o: with_member(f, file_member("./results//benchmarks.csv", TABLE.encode())),
        "twice",
    ),
    "bad-number": (
        lambda f, _o: write_tar_gz(f, valid_members(f.name, TABLE.replace("12.5", "fast"))),
        "'fast' is not a number",
    ),
    "infinite-number": (
        lambda f, _o: write_tar_gz(f, valid_members(f.name, TABLE.replace("12.5", "inf"))),
        "not a finite figure",
    ),
    "bad-encoding": (
        lambda f, _o: write_tar_gz(f, valid_members(f.name, TABLE.replace("tiny", "t\udcffny"))),
        "not UTF-8",
    ),
    "no-table": (lambda f, _o: write_tar_gz(f, valid_members(f.name)[:1]), "no results/benchmarks"),
    "table-over-bound": (
        lambda f, _o: write_tar_gz(
            f, valid_members(f.name, TABLE + "#" * (MAX_READ_BYTES + 1) + "\n")
        ),
        "over the 4 MiB",
    ),
    "member-of-2-gb": (
        lambda f, _o: huge_header(f, tarfile.REGTYPE, 2 * 2**30),
        "past 1 GiB unpacked",
    ),
    "pax-header-of-2-gb": (
        lambda f, _o: huge_header(f, tarfile.XHDTYPE, 2 * 2**30),
        "tar header or member of 2 GiB",
    ),
    "spoofed-profile": (spoofed_profile, "says profile 'victim-machine'"),
    "bad-created-at": (
        lambda f, _o: write_tar_gz(f, valid_members(f.name, created="soon")),
        "not an ISO date",
    ),
    "seed-profile-folder": (
        lambda f, _o: write_tar_gz(f, valid_members(f.name)),
        "seed report",
    ),
    "fifo-archive": (fifo_archive, "a FIFO, not a regular file"),
    "symlinked-archive": (symlinked_archive, "a symlink"),
    "symlinked-folder": (symlinked_folder, "a symlink, not followed"),
    "folder-archive": (folder_named_like_an_archive, "a folder, not a regular file"),
}
# The folder of each kind is its profile; the seed kind must sit in the seed's own name.
FOLDERS = {kind: f"bad-{kind}" for kind in HOSTILE} | {
    "seed-profile-folder": "mps-apple-m4-seed-report"
}


def make_hostile(workdir: Path, kind: str, outside: Path) -> str:
    """Make one hostile archive in ``workdir/archive/`` (links point into ``outside``, a
    folder beside the project); its path as compare lists it."""
    builder, _reason = HOSTILE[kind]
    path = builder(workdir / "archive" / FOLDERS[kind], outside)
    return str(path.relative_to(workdir))


def bounded(function, *args):
    """``function(*args)`` in a thread, failing the test if it has not returned within
    :data:`HANG_GUARD_S`: a hang on a FIFO must fail, not block the suite."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # handed back to the test below
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"{function.__name__} hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def compare_here(workdir: Path, tables: tuple[str, ...] = ()) -> str:
    """COMPARISON.md as the render_comparison job makes it, run in ``workdir``."""
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        archives, refused = find_archives(Path("archive"))
        rows, skipped = gather([Path(table) for table in tables], archives, None)
        return render_comparison(comparison_context(rows, None, refused + skipped))
    finally:
        os.chdir(cwd)


def skipped_section(comparison: str) -> dict[str, str]:
    """The "Skipped archives" table: escaped path to escaped reason."""
    if "## Skipped archives" not in comparison:
        return {}
    section = comparison.split("## Skipped archives", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    cells = [re.split(r"(?<!\\)\|", row)[1:3] for row in rows]
    return {path.strip(): reason.strip() for path, reason in cells}


def compared_profiles(comparison: str) -> list[str]:
    table = comparison.split("| Profile | Source |", 1)[1].split("\n\n", 1)[0]
    return [re.split(r"(?<!\\)\|", line)[1].strip() for line in table.splitlines()[2:]]


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_bad_archive_is_skipped_with_its_reason_and_the_good_one_compared(
    tmp_path, tmp_path_factory, kind
):
    good_archive(tmp_path, GOOD)
    path = make_hostile(tmp_path, kind, tmp_path_factory.mktemp("outside"))
    comparison = bounded(compare_here, tmp_path)
    assert compared_profiles(comparison) == [GOOD]
    assert re.search(r"^\| tiny-llm \| eager \| tokens/s \| 12\.5 \|", comparison, re.M)
    skipped = skipped_section(comparison)
    assert list(skipped) == [md(path)]
    assert md(HOSTILE[kind][1]) in skipped[md(path)]


def test_a_fifo_named_like_an_archive_is_never_opened(tmp_path):
    fifo = Path(make_hostile(tmp_path, "fifo-archive", tmp_path))
    archives, refused = bounded(find_archives, tmp_path / "archive")
    assert archives == [] and [r.path for r in refused] == [str(tmp_path / fifo)]
    with pytest.raises(ArchiveRefused, match="FIFO"):
        bounded(read_archive, tmp_path / fifo)  # even when named directly


def test_a_bad_current_table_is_skipped_like_a_bad_archive(tmp_path):
    good_archive(tmp_path, GOOD)
    bad = tmp_path / "results" / "bad-machine" / "benchmarks.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text(TABLE.replace("12.5", "-3"))
    fifo = tmp_path / "results" / "fifo-machine" / "benchmarks.csv"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    tables = ("results/bad-machine/benchmarks.csv", "results/fifo-machine/benchmarks.csv")
    comparison = bounded(compare_here, tmp_path, tables)
    assert compared_profiles(comparison) == [GOOD]
    skipped = skipped_section(comparison)
    assert "'-3' is not a finite figure &gt;= 0" in skipped[md(tables[0])]
    assert "a FIFO, not a regular file" in skipped[md(tables[1])]


def test_an_archive_in_another_folder_cannot_replace_a_profiles_figures(tmp_path):
    good_archive(tmp_path, "victim-machine")
    later = (CREATED + dt.timedelta(days=1)).isoformat()
    spoof = write_tar_gz(
        tmp_path / "archive" / "other-machine",
        valid_members("victim-machine", TABLE.replace("12.5", "999"), later),
    )
    comparison = compare_here(tmp_path)
    assert compared_profiles(comparison) == ["victim-machine"]
    assert "| 12.5 |" in comparison and "999" not in comparison
    reason = skipped_section(comparison)[md(spoof.relative_to(tmp_path))]
    assert "says profile 'victim-machine'" in reason


def test_the_newest_archive_of_a_profile_is_the_latest_in_time_not_in_text(tmp_path):
    nine_utc = dt.datetime(2026, 1, 2, 9, tzinfo=dt.UTC)
    # Ten o'clock at UTC+05 is five in UTC: earlier, though its text sorts later.
    five_utc = dt.datetime(2026, 1, 2, 10, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    good_archive(tmp_path, GOOD, TABLE.replace("12.5", "10"), now=nine_utc)
    good_archive(tmp_path, GOOD, TABLE.replace("12.5", "20"), now=five_utc)
    comparison = compare_here(tmp_path)
    assert "| 10.0 |" in comparison and "| 20.0 |" not in comparison


def test_markup_and_html_in_profile_backend_and_model_names_are_escaped(tmp_path):
    profile = "<script>alert(1)<|x"
    names = "ev|l *m* [x](y),<img src=x onerror=alert(1)>|b"
    table = HEADER + names + ",text-generation,measured,False,3,4\n"
    good_archive(tmp_path, GOOD)
    good_archive(tmp_path, profile, table)
    comparison = compare_here(tmp_path)
    assert "<script" not in comparison and "<img" not in comparison
    assert "&lt;script&gt;alert(1)&lt;\\|x" in compared_profiles(comparison)
    for line in comparison.splitlines():
        if line.startswith("| ev") or line.startswith("| tiny-llm"):
            # Model, backend, unit, then speed, ratio, memory, energy for each of the two
            # profiles.
            assert len(re.findall(r"(?<!\\)\|", line)) == 1 + 3 + 4 * 2, line


def test_every_hostile_archive_at_once_through_snakemake_compare(workdir, tmp_path_factory):
    good_archive(workdir, GOOD)
    # Names Snakemake cannot take as an input (a wildcard, bytes that are not UTF-8):
    # the first is still compared, the second skipped, and neither stops the run.
    good_archive(workdir, "{wildcard}")
    undecodable = workdir / "archive" / os.fsdecode(b"\xff-machine")
    write_tar_gz(undecodable, valid_members(undecodable.name))
    outside = tmp_path_factory.mktemp("outside")
    paths = {kind: make_hostile(workdir, kind, outside) for kind in HOSTILE}
    paths["undecodable"] = str((undecodable / "x.tar.gz").relative_to(workdir))
    earlier = workdir / "results" / "COMPARISON.md"
    write_text(earlier, "# an earlier comparison\n")
    os.utime(earlier, (0, 0))  # older than the archives: compare has to run
    snakemake(
        workdir, "--cores", "1", "compare",
        "--config", "size=tiny", "weights=synthetic", "profile=test-machine",
    )  # fmt: skip
    comparison = earlier.read_text()
    assert comparison.startswith("# Comparison across machines")
    assert compared_profiles(comparison) == [GOOD, "{wildcard}", "mps-apple-m4-seed-report"]
    skipped = skipped_section(comparison)
    assert set(skipped) == {md(path) for path in paths.values()}
    assert "ARCHIVE.txt is not UTF-8 text" in skipped[md(paths.pop("undecodable"))]
    for kind, path in paths.items():
        assert md(HOSTILE[kind][1]) in skipped[md(path)], kind


def test_a_failed_compare_keeps_the_earlier_comparison(workdir):
    # The log path taken by a folder makes the job fail before it writes anything.
    earlier = workdir / "results" / "COMPARISON.md"
    write_text(earlier, "# an earlier comparison\n")
    (workdir / "results" / "logs" / "render_comparison.log").mkdir(parents=True)
    (workdir / "results" / "logs" / "render_comparison.log" / "keep").write_text("")
    run = snakemake(
        workdir, "--cores", "1", "compare", "--forcerun", "render_comparison",
        "--config", "size=tiny", "weights=synthetic", "profile=test-machine",
        check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert earlier.read_text() == "# an earlier comparison\n"


def test_md_is_one_line_of_literal_text_in_markdown_and_html():
    escaped = md("<script>x</script> & [a](b) | `c` *d*\n- e\r\x1b[31m")
    assert escaped == (
        "&lt;script&gt;x&lt;/script&gt; &amp; \\[a\\](b) \\| \\`c\\` \\*d\\* - e \ufffd\\[31m"
    )
    assert md("- item").startswith("\\-") and md("1. item") == "1\\. item"
    assert md("===") == "\\===" and md("---") == "\\---" and md("") == md(None) == ""
    assert md("test-machine") == "test-machine" and md(12.5) == "12.5" and md(-1) == "-1"


def test_pipeline_report_escapes_pipeline_stage_and_model_names():
    stages = [{"name": "cap<b>|x", "model": "m<i>"}, {"name": "sum*y*", "model": "m2"}]
    context = report_context(
        "pipe<script>", stages, {"folder": "in<put>", "rejected": []}, [], "prof|<x>"
    )
    report = render_report(context)
    for raw in ("<b>", "<i>", "<script>", "<x>", "<put>", "*y*"):
        assert raw not in report, raw
    assert not re.search(r"(?<!\\)\|x", report)
    assert "cap&lt;b&gt;\\|x (m&lt;i&gt;) → sum\\*y\\* (m2)" in report
    assert "| cap&lt;b&gt;\\|x | m&lt;i&gt; |" in report


def test_summary_escapes_names_from_the_config_and_the_results():
    result = {
        "model": "m<x>",
        "status": "failed",
        "reason": "<script>",
        "repo": "a/b",
        "task": "text-generation",
        "backend_requested": "fa<st>|",
        "dtype": "<b>",
        "settings": {"benchmark": {"prompt_tokens": "<p>", "new_tokens": 1}},
    }
    hardware = {
        "chip": "<chip>", "cpu_logical_cores": 2, "memory_bytes": 2**30, "platform": "<os>",
        "python": "<py>", "torch": "<torch>", "accelerator": "cpu", "transformers": "<tf>",
        "profile": "<profile>",
    }  # fmt: skip
    warmup = {
        "init_s": 0.1, "matmul_size": 8, "first_matmul_s": 0.1, "dtype": "<w>",
        "copy_bandwidth_gb_per_s": {"median": 1.0}, "matmul_tflops": {"median": 1.0},
    }  # fmt: skip
    summary = render_summary(summary_context([result], hardware, warmup))
    for raw in ("<x>", "<script>", "<st>", "<b>", "<p>", "<chip>", "<os>", "<py>", "<w>"):
        assert raw not in summary, raw
    assert "fa&lt;st&gt;\\|" in summary and "**Profile**: &lt;profile&gt;" in summary

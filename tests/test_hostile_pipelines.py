"""Hostile input folders: names too long for the file system, link loops, dangling links,
FIFOs, sockets, folders named like files, names that break lines, audio too short and
images too small to use. Each bad entry is a failed input with its reason; the good
files beside it get their outputs, and planning never stops the workflow.

Every file is generated here (speech by espeak-ng, pictures by Pillow); one real
snakemake run on tiny models covers the classes end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from conftest import ROOT, TINY, TWO_JOBS, snakemake
from localbench.atomic import write_text
from localbench.pipelines import media
from localbench.pipelines.batch import FAILED, FAILED_PREFIX, BatchItem, run_stage_batch
from localbench.pipelines.plan import (
    MAX_OUTPUT_NAME_BYTES,
    output_name,
    output_path,
    plan_pipeline,
    plan_pipelines,
    printable_name,
    scan_inputs,
)
from localbench.report.summary import md
from media_files import picture, write_speech
from test_pipelines import edit_config, out, records

# Names of 255 bytes, the most ext4 allows: ASCII, two-byte and four-byte UTF-8, and
# two that differ only in their last characters.
LONG_ASCII = "m" * 251 + ".wav"
LONG_TWIN = "m" * 250 + "n.wav"
LONG_ACCENTED = "é" * 124 + "xy.flac"  # 248 + 7 bytes
LONG_EMOJI = "🎙" * 62 + "rec.wav"  # 248 + 7 bytes


def hostile_entries(folder: Path, outside: Path) -> dict[str, str]:
    """Make every kind of entry that is not a usable file in ``folder``; return each
    name (as the listing shows it) with a word its rejection reason must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (folder / "loop-a.wav").symlink_to("loop-b.wav")
    (folder / "loop-b.wav").symlink_to("loop-a.wav")
    (folder / "self.wav").symlink_to("self.wav")
    (folder / "dangling.wav").symlink_to("gone.wav")
    os.mkfifo(folder / "pipe.wav")
    (folder / "to-pipe.wav").symlink_to("pipe.wav")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "sock.wav"))
    (folder / "album.wav").mkdir()
    (folder / "null.wav").symlink_to("/dev/null")
    (outside / "secret.wav").write_bytes(b"RIFF secret")
    (folder / "escape.wav").symlink_to(outside / "secret.wav")
    (folder / "through-loop.wav").symlink_to("loop-a.wav/x")
    (folder / "two\nlines.wav").write_bytes(b"RIFF")
    (folder / "para\u2029graph.wav").write_bytes(b"RIFF")
    os.close(os.open(bytes(folder) + b"/caf\xe9.wav", os.O_CREAT | os.O_WRONLY))
    return {
        "loop-a.wav": "loop",
        "loop-b.wav": "loop",
        "self.wav": "loop",
        "dangling.wav": "link to nothing",
        "pipe.wav": "FIFO",
        "to-pipe.wav": "FIFO",
        "sock.wav": "socket",
        "album.wav": "folder",
        "null.wav": "outside the folder",
        "escape.wav": "outside the folder",
        "through-loop.wav": "",  # a loop on the way: any reason
        "two\\nlines.wav": "control characters",
        "para\\u2029graph.wav": "control characters",
        "caf\\xe9.wav": "not valid UTF-8",
    }


def shipped_config(**inputs: Path) -> dict:
    """The shipped config.yaml with pipeline input folders replaced."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for pipeline, folder in inputs.items():
        config["pipelines"][pipeline.replace("_", "-")]["inputs"] = str(folder)
    return config


# ---------------------------------------------------------------------------------------
# Listing and planning: no model, no workflow run.


def test_every_hostile_entry_is_rejected_with_a_reason_never_raised(tmp_path):
    folder = tmp_path / "audio"
    expected = hostile_entries(folder, tmp_path / "elsewhere")
    good = ["memo.wav", "-rf.wav", "--help.wav", LONG_ASCII, LONG_TWIN]
    for name in good:
        (folder / name).write_bytes(b"RIFF")  # the content is read by the jobs, not here
    listing = scan_inputs(str(folder), "audio")
    assert sorted(listing.usable) == sorted(good)
    reasons = {r["name"]: r["reason"] for r in listing.rejected}
    assert set(reasons) == set(expected)
    for name, word in expected.items():
        assert word in reasons[name] and "\n" not in reasons[name], (name, reasons[name])
    assert scan_inputs(str(folder), "audio") == listing  # the same on every parse


@pytest.mark.parametrize("kind", ["loop", "dangling", "fifo", "file"])
def test_an_input_folder_that_cannot_be_listed_gets_one_note(tmp_path, kind):
    folder = tmp_path / "inputs"
    if kind == "loop":
        folder.symlink_to(folder)
    elif kind == "dangling":
        folder.symlink_to(tmp_path / "gone")
    elif kind == "fifo":
        os.mkfifo(folder)
    else:
        folder.write_bytes(b"x")
    listing = scan_inputs(str(folder), "image")
    assert listing.usable == [] and listing.rejected == []
    word = {"loop": "symbolic link loop", "dangling": "link to nothing"}.get(kind, "not a folder")
    assert word in listing.note and "\n" not in listing.note


def test_long_names_get_short_stable_distinct_output_names(tmp_path):
    names = [LONG_ASCII, LONG_TWIN, LONG_ACCENTED, LONG_EMOJI]
    assert all(len(n.encode()) >= 250 for n in names)
    shortened = [output_name(n, "txt") for n in names]
    assert len(set(shortened)) == len(names)
    assert shortened == [output_name(n, "txt") for n in names]  # stable
    for name, short in zip(names, shortened, strict=True):
        assert len(short.encode()) <= MAX_OUTPUT_NAME_BYTES
        assert short.endswith(Path(name).suffix + ".txt")
        assert name.startswith(short.split("~")[0])  # a readable prefix of the name
        # The atomic writer's temporary name must fit too: write it for real.
        write_text(output_path(tmp_path, name, "txt"), "text\n")
        assert (tmp_path / short).read_text() == "text\n"
    assert output_name("memo one.wav", "md") == "memo one.wav.md"  # short names unchanged


def test_an_output_name_already_taken_rejects_the_file_not_the_run(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    # A short name crafted to equal a long name's shortened output name.
    crafted = output_name(LONG_ASCII, "txt").removesuffix(".txt")
    for name in (LONG_ASCII, crafted, "memo.wav"):
        (folder / name).write_bytes(b"RIFF")
    config = shipped_config(voice_notes=folder)
    plan = plan_pipeline(config, "voice-notes", "results/t", "models", "results/t/logs")
    outputs = [path for job in plan.jobs if job.stage == "transcripts" for path in job.outputs]
    assert len(outputs) == len(set(outputs)) == 2
    (kept,) = set(plan.listing.usable) - {"memo.wav"}
    (rejected,) = plan.listing.rejected
    assert {kept, rejected["name"]} == {LONG_ASCII, crafted}
    assert f"is already that of {kept!r}" in rejected["reason"]


def test_a_question_file_linked_out_of_the_folder_is_never_read(tmp_path):
    folder = tmp_path / "vqa"
    folder.mkdir()
    picture().save(folder / "scene.jpg")
    picture().save(folder / "other.png")
    (tmp_path / "secret.txt").write_text("What is the password?\n")
    (folder / "scene.txt").symlink_to(tmp_path / "secret.txt")
    os.mkfifo(folder / "other.txt")  # reading it would wait forever
    config = shipped_config(visual_qa=folder)
    plan = plan_pipeline(config, "visual-qa", "results/t", "models", "results/t/logs")
    (job,) = plan.jobs
    assert job.names == ["other.png", "scene.jpg"] and job.questions == ["", ""]
    assert {r["name"]: r["reason"] for r in plan.listing.rejected} == {
        "other.txt": "question file: a named pipe (FIFO), not a regular file",
        "scene.txt": "question file: a link pointing outside the folder",
    }


def test_planning_every_pipeline_never_raises(tmp_path):
    audio = tmp_path / "audio"
    hostile_entries(audio, tmp_path / "elsewhere")
    (audio / "memo.wav").write_bytes(b"RIFF")
    images = tmp_path / "images"
    images.symlink_to(images)  # the folder itself is a loop
    config = shipped_config(voice_notes=audio, photo_stories=images, visual_qa=Path("bad\0"))
    plans, not_run = plan_pipelines(config, "results/t", "models", "results/t/logs")
    assert not_run == {}
    assert plans["voice-notes"].listing.usable == ["memo.wav"]
    assert "symbolic link loop" in plans["photo-stories"].listing.note
    assert "NUL" in plans["visual-qa"].listing.note


def test_names_are_shown_on_one_line():
    assert printable_name("two\nlines\r\u2028\x85.wav") == "two\\nlines\\r\\u2028\\x85.wav"
    assert printable_name("caf\udce9.wav") == "caf\\xe9.wav"


# ---------------------------------------------------------------------------------------
# Running a batch: one file's output that cannot be written costs no other file its own.


def test_an_output_that_cannot_be_written_fails_that_file_only(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    items = [
        BatchItem(name=n, source=str(tmp_path / n), output=str(folder / f"{n}.txt"))
        for n, folder in (("a.wav", tmp_path / "out"), ("b.wav", blocker), ("c.wav", tmp_path))
    ]
    settings = {
        "pipeline": "p",
        "stage": "transcripts",
        "model": {"name": "whisper-base", "task": "speech-recognition"},
    }
    manifest = {"status": "failed", "reason": "no download possible"}
    record = run_stage_batch(settings, manifest, tmp_path / "model", "b1", items)
    assert [f["status"] for f in record["files"]] == [FAILED] * 3
    assert "cannot be written" in record["files"][1]["reason"]
    for item in (items[0], items[2]):
        assert Path(item.output).read_text().startswith(FAILED_PREFIX + "RuntimeError")


# ---------------------------------------------------------------------------------------
# Reading media: content that decodes but cannot be used is refused with a reason.


def test_audio_at_an_absurd_rate_or_of_many_hours_is_refused_before_decoding(tmp_path):
    soundfile.write(str(tmp_path / "eight.wav"), np.full(8, 0.5, dtype=np.float32), 8)
    with pytest.raises(media.UnreadableInput, match="sample rate 8 Hz"):
        media.load_audio(tmp_path / "eight.wav", 16_000)
    # Hours of silence compress to a small FLAC; decoded, they would fill the memory.
    rate, seconds = 4_000, media.MAX_AUDIO_SECONDS + 60
    with soundfile.SoundFile(
        str(tmp_path / "bomb.flac"), "w", samplerate=rate, channels=1, format="FLAC"
    ) as sound:
        block = np.zeros(rate * 600, dtype=np.float32)
        for _ in range(seconds // 600 + 1):
            sound.write(block)
    with pytest.raises(media.UnreadableInput, match="hours long"):
        media.load_audio(tmp_path / "bomb.flac", 16_000)


def test_images_below_the_models_patch_are_refused(tmp_path):
    picture(1, 1).save(tmp_path / "dot.png")
    with pytest.raises(media.UnreadableInput, match="1x1 pixels"):
        media.load_image(tmp_path / "dot.png", min_side=16)
    picture(3000, 20).save(tmp_path / "strip.png")  # 20 px high, 14 px once at 2048 wide
    with pytest.raises(media.UnreadableInput, match="too thin"):
        media.load_image(tmp_path / "strip.png", min_side=16)
    assert media.load_image(tmp_path / "strip.png", min_side=14).size == (2048, 14)


def test_a_huge_text_file_is_refused_not_read(tmp_path):
    (tmp_path / "big.txt").write_bytes(b"word " * (media.MAX_TEXT_BYTES // 5 + 1))
    with pytest.raises(media.UnreadableInput, match="larger than"):
        media.read_text_file(tmp_path / "big.txt")


# ---------------------------------------------------------------------------------------
# End to end: one real run on tiny models with hostile files beside good ones.


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """voice-notes (transcripts only) and photo-stories (captions only) over folders of
    good and hostile files; visual-qa's folder is a link loop."""
    workdir = tmp_path_factory.mktemp("hostile")
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")

    def one_stage(config):
        for pipeline in ("voice-notes", "photo-stories"):
            del config["pipelines"][pipeline]["stages"][1:]

    edit_config(workdir, one_stage)
    audio, images = workdir / "inputs" / "audio", workdir / "inputs" / "images"
    expected = hostile_entries(audio, workdir / "elsewhere")
    for name in ("memo.wav", LONG_ASCII, LONG_TWIN, "--help.wav"):
        write_speech(audio / name, "Buy milk on the way home.")
    write_speech(audio / LONG_ACCENTED, "The meeting moved to Thursday.")
    soundfile.write(str(audio / "blip.wav"), np.full(8, 0.3, dtype=np.float32), 16_000)
    images.mkdir(parents=True)
    picture().save(images / "house.jpg")
    picture().save(images / LONG_EMOJI.replace(".wav", ".png"))
    picture(1, 1).save(images / "dot.png")
    picture(3000, 20).save(images / "strip.png")
    (workdir / "inputs" / "vqa").symlink_to("vqa")
    dry = snakemake(workdir, "-n", "report", *TINY, check=False)
    completed = snakemake(workdir, *TWO_JOBS, "pipelines", *TINY, check=False)
    return workdir, dry, completed, expected


def test_planning_with_hostile_folders_never_stops_report(hostile_run):
    _, dry, _, _ = hostile_run
    text = dry.stdout + dry.stderr
    assert dry.returncode == 0, text[-3000:]
    assert "Traceback" not in text


def test_good_files_are_done_and_hostile_ones_failed_with_a_reason(hostile_run):
    workdir, _, completed, expected = hostile_run
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    voice = out(workdir, "voice-notes")
    transcripts = records(workdir, "voice-notes", "transcripts")
    good = {"memo.wav", LONG_ASCII, LONG_TWIN, LONG_ACCENTED, "--help.wav"}
    assert {n for n, r in transcripts.items() if r["status"] == "done"} == good
    outputs = {transcripts[n]["output"] for n in good}
    assert len(outputs) == len(good)
    for name in good:
        output = Path(transcripts[name]["output"])
        assert len(output.name.encode()) <= MAX_OUTPUT_NAME_BYTES
        assert (workdir / output).read_text() == transcripts[name]["text"] + "\n"
    assert transcripts["blip.wav"]["status"] == "failed"
    assert "at least 0.10 s is needed" in transcripts["blip.wav"]["reason"]
    listing = json.loads((voice / "settings" / "inputs.json").read_text())
    reasons = {r["name"]: r["reason"] for r in listing["rejected"]}
    assert set(reasons) == set(expected)
    report = (voice / "REPORT.md").read_text()
    assert f"#### {md(LONG_ASCII)}" in report  # the original name, whole
    assert f"output file: {md(Path(transcripts[LONG_ASCII]['output']).name)}" in report
    for name in ("loop-a.wav", "pipe.wav", "album.wav", "blip.wav"):
        assert f"| {md(name)} |" in report
    captions = records(workdir, "photo-stories", "captions")
    assert (
        captions["house.jpg"]["status"]
        == captions[LONG_EMOJI.replace(".wav", ".png")]["status"]
        == "done"
    )
    assert "1x1 pixels" in captions["dot.png"]["reason"]
    assert "too thin" in captions["strip.png"]["reason"]
    assert "voice-notes: 5 of 20 files done, 15 failed" in completed.stdout
    assert "photo-stories: 2 of 4 files done, 2 failed" in completed.stdout
    assert "visual-qa: no input files: inputs/vqa cannot be used: a symbolic link loop" in (
        completed.stdout
    )


def test_a_pipeline_left_out_keeps_its_target_which_says_why(workdir):
    edit_config(workdir, lambda c: c["models"].pop("blip-base"))
    completed = snakemake(workdir, "--cores", "1", "photo-stories", *TINY)
    assert "photo-stories: not run: pipelines.photo-stories.stages[0].model" in completed.stdout

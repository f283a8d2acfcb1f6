"""Pipelines over input folders, through the real snakemake command line on tiny models,
with speech from espeak-ng, pictures from Pillow, and broken files among them."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import TINY, TWO_JOBS, snakemake
from localbench.pipelines.plan import stable_batches
from media_files import picture, write_m4a, write_speech

PIPELINES = ("voice-notes", "photo-stories", "visual-qa")
GOOD_AUDIO = ["memo one.wav", "réunion.v2.flac", "walk.ogg", "call.mp3", "idea.m4a"]
GOOD_IMAGES = ["house.jpg", "grey [1].png", "print.tiff", "anim.gif", "alpha.webp", "plain.bmp"]
EVIL = "evil | # [x](y) *z*.wav"
# voice-notes' seven files (GOOD_AUDIO, EVIL, broken.wav) make two batches of this size.
BATCH_SIZE = 3


def make_inputs(root: Path) -> None:
    audio = root / "inputs" / "audio"
    audio.mkdir(parents=True)
    write_speech(audio / "memo one.wav", "Buy milk and eggs on the way home.")
    write_speech(audio / "réunion.v2.flac", "The meeting moved to Thursday.", 44100, channels=2)
    write_speech(audio / "walk.ogg", "A long walk by the river.", rate=48000)
    write_speech(audio / "call.mp3", "Call the plumber tomorrow.", rate=44100)
    write_m4a(audio / "idea.m4a", "An idea for the garden.")
    write_speech(audio / EVIL, "Markdown in a file name.")
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00 not a wave file")
    (audio / "empty.mp3").write_bytes(b"")
    (audio / "notes.docx").write_bytes(b"PK\x03\x04")
    (audio / "a {b}.wav").write_bytes((audio / "walk.ogg").read_bytes())
    (audio / "a <b>.wav").write_bytes((audio / "walk.ogg").read_bytes())
    images = root / "inputs" / "images"
    images.mkdir(parents=True)
    picture().save(images / "house.jpg")
    picture(mode="L").save(images / "grey [1].png")
    picture(mode="CMYK").save(images / "print.tiff")
    picture(mode="P").save(images / "anim.gif")
    picture(mode="RGBA").save(images / "alpha.webp")
    picture().save(images / "plain.bmp")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    vqa = root / "inputs" / "vqa"
    vqa.mkdir(parents=True)
    picture().save(vqa / "scene.jpg")
    (vqa / "scene.txt").write_text("What colour is the roof?\nIs it sunny?\n", encoding="utf-8")
    picture(200, 200).save(vqa / "other.png")


def edit_config(workdir: Path, change) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The three shipped pipelines run once on tiny models; voice-notes in batches."""
    workdir = tmp_path_factory.mktemp("pipelines")
    shutil.copy(Path(__file__).resolve().parent.parent / "config.yaml", workdir / "config.yaml")
    edit_config(workdir, lambda c: c["pipelines"]["voice-notes"].update(batch_size=BATCH_SIZE))
    # More threads than --cores gives the jobs (Snakemake sets OMP_NUM_THREADS to those).
    edit_config(workdir, lambda c: c.update(threads=3))
    make_inputs(workdir)
    completed = snakemake(workdir, *TWO_JOBS, "pipelines", *TINY)
    return workdir, completed


@pytest.fixture
def finished(pipeline_run, tmp_path) -> Path:
    """A private copy of the finished pipeline run."""
    target = tmp_path / "run"
    shutil.copytree(pipeline_run[0], target, symlinks=True)
    return target


def out(workdir: Path, pipeline: str) -> Path:
    return workdir / "results" / "test-machine" / "pipelines" / pipeline


def records(workdir: Path, pipeline: str, stage: str) -> dict[str, dict]:
    """Every file's record in one stage, from its batch records."""
    found = {}
    for path in (out(workdir, pipeline) / "batches" / stage).glob("*.json"):
        for record in json.loads(path.read_text())["files"]:
            found[record["name"]] = record
    return found


def planned_jobs(workdir: Path, target: str = "pipelines") -> dict[str, int]:
    """Job counts of a dry run."""
    completed = snakemake(workdir, "-n", target, *TINY)
    text = completed.stdout + completed.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:")[1].split("\n\n")[0]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\S+)\s+(\d+)$", stats, flags=re.MULTILINE)
        if m.group(1) != "total"
    }


def test_every_good_file_gets_every_stage_output(pipeline_run):
    workdir, completed = pipeline_run
    voice = out(workdir, "voice-notes")
    for name in [*GOOD_AUDIO, EVIL]:
        assert (voice / "transcripts" / f"{name}.txt").is_file(), name
        assert (voice / "summaries" / f"{name}.md").is_file(), name
    photos = out(workdir, "photo-stories")
    for name in GOOD_IMAGES:
        assert (photos / "captions" / f"{name}.txt").is_file(), name
        assert (photos / "descriptions" / f"{name}.md").is_file(), name
    transcripts = records(workdir, "voice-notes", "transcripts")
    assert {n for n, r in transcripts.items() if r["status"] == "done"} == {*GOOD_AUDIO, EVIL}
    # Every format decoded to the real length of its speech (espeak-ng: about 1-3 s).
    for name in GOOD_AUDIO:
        assert 0.8 < transcripts[name]["audio_seconds"] < 5, (name, transcripts[name])
    captions = records(workdir, "photo-stories", "captions")
    assert {n for n, r in captions.items() if r["status"] == "done"} == set(GOOD_IMAGES)
    for line in ("voice-notes: 6 of 11 files done, 5 failed", "photo-stories: 6 of 7 files"):
        assert line in completed.stdout


def test_bad_files_are_recorded_with_a_reason(pipeline_run):
    workdir, _ = pipeline_run
    voice = out(workdir, "voice-notes")
    transcripts = records(workdir, "voice-notes", "transcripts")
    assert transcripts["broken.wav"]["status"] == "failed"
    assert "cannot decode as audio" in transcripts["broken.wav"]["reason"]
    assert records(workdir, "voice-notes", "summaries")["broken.wav"]["status"] == "skipped"
    assert (voice / "transcripts" / "broken.wav.txt").read_text().startswith("FAILED: ")
    listing = json.loads((voice / "settings" / "inputs.json").read_text())
    reasons = {r["name"]: r["reason"] for r in listing["rejected"]}
    assert reasons["empty.mp3"] == "empty file (0 bytes)"
    assert reasons["notes.docx"].startswith("not an audio file: extension '.docx'")
    assert "wildcard" in reasons["a {b}.wav"]
    assert "path variable" in reasons["a <b>.wav"]
    report = (voice / "REPORT.md").read_text()
    for name in ("broken.wav", "empty.mp3", "notes.docx"):
        assert f"| {name} |" in report
    captions = records(workdir, "photo-stories", "captions")
    assert captions["corrupt.png"]["reason"].startswith("cannot decode the image")


def test_reports_escape_names_and_say_synthetic(pipeline_run):
    workdir, _ = pipeline_run
    report = (out(workdir, "voice-notes") / "REPORT.md").read_text()
    assert "#### evil \\| \\# \\[x\\](y) \\*z\\*.wav" in report
    assert "**Synthetic weights**" in report and "gibberish" in report
    table = report.split("### Stages")[1].split("\n\n")[1].splitlines()
    assert table[2].startswith("| transcripts | whisper-base (synthetic) | cpu | 6 | 0 | 1 | 0 |")
    # Each stage's latencies are this run's: p50 in the table is the median of the records.
    latencies = sorted(
        r["latency_s"]
        for r in records(workdir, "voice-notes", "transcripts").values()
        if r["status"] == "done"
    )
    median_ms = (latencies[2] + latencies[3]) / 2 * 1e3
    assert f"| {median_ms:.0f} |" in table[2]
    for line in report.splitlines():
        if line.startswith("> "):
            assert "|" not in line.replace("\\|", "")
    # The same report as a page of the HTML report: the hostile name stays text.
    page = (out(workdir, "voice-notes") / "REPORT.html").read_text()
    assert "<h4>evil | # [x](y) *z*.wav</h4>" in page and "<script" not in page


def test_model_loads_once_per_batch(pipeline_run):
    workdir, _ = pipeline_run
    batch_files = sorted((out(workdir, "voice-notes") / "batches" / "transcripts").glob("*.json"))
    names = [*GOOD_AUDIO, EVIL, "broken.wav"]
    expected = stable_batches(names, BATCH_SIZE)
    assert len(batch_files) == len(expected) > 1
    for path in batch_files:
        record = json.loads(path.read_text())
        assert record["load_s"] > 0 and record["synthetic"] is True
        assert record["torch_threads"] == 3 == record["openmp_threads"]
        assert record["openmp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY")  # CPU
        assert [f["name"] for f in record["files"]] == next(
            list(b.names) for b in expected if b.id == record["batch"]
        )


def test_stage_logs_count_the_files_done(pipeline_run):
    workdir, _ = pipeline_run
    logs = workdir / "results" / "test-machine" / "logs" / "pipelines" / "voice-notes"
    for stage in ("transcripts", "summaries"):
        assert list((logs / stage).glob("*.log")), stage
        for path in (logs / stage).glob("*.log"):
            record = json.loads(
                (out(workdir, "voice-notes") / "batches" / stage / f"{path.stem}.json").read_text()
            )
            total = len(record["files"])
            lines = [line for line in path.read_text().splitlines() if ": file " in line]
            assert lines, path
            assert lines[-1].startswith(
                f"voice-notes/{stage} batch {path.stem}: file {total} of {total} "
            )
            assert "files/s so far" in lines[-1]


def test_visual_qa_reads_sidecar_questions_or_the_defaults(pipeline_run):
    workdir, _ = pipeline_run
    answers = records(workdir, "visual-qa", "answers")
    assert [a["question"] for a in answers["scene.jpg"]["answers"]] == [
        "What colour is the roof?",
        "Is it sunny?",
    ]
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    defaults = config["pipelines"]["visual-qa"]["questions"]
    assert [a["question"] for a in answers["other.png"]["answers"]] == defaults
    text = (out(workdir, "visual-qa") / "answers" / "scene.jpg.md").read_text()
    assert text.startswith("Q: What colour is the roof?\nA: ")


def test_a_prompt_change_reruns_that_stage_only(finished):
    edit_config(
        finished,
        lambda c: c["pipelines"]["voice-notes"]["stages"][1].update(prompt="Shorter: {previous}"),
    )
    jobs = planned_jobs(finished)
    summaries = sum(n for rule, n in jobs.items() if rule.startswith("run_voice-notes_summaries"))
    assert summaries == len(
        list((out(finished, "voice-notes") / "batches" / "summaries").iterdir())
    )
    assert not [rule for rule in jobs if "transcripts" in rule or "photo-stories" in rule]


def test_a_first_stage_model_change_reruns_the_whole_chain(finished):
    edit_config(
        finished, lambda c: c["pipelines"]["photo-stories"]["stages"][0].update(max_new_tokens=5)
    )
    jobs = planned_jobs(finished)
    assert {rule.split("_")[2] for rule in jobs if rule.startswith("run_")} == {
        "captions",
        "descriptions",
    }


def test_an_added_file_runs_only_its_batch(finished):
    audio = finished / "inputs" / "audio"
    before = sorted(n for n in os.listdir(audio) if n in [*GOOD_AUDIO, EVIL, "broken.wav"])
    write_speech(audio / "zebra crossing.wav", "One more note.")
    old = stable_batches(before, BATCH_SIZE)
    new = stable_batches([*before, "zebra crossing.wav"], BATCH_SIZE)
    changed = {b.id for b in new} - {b.id for b in old} | {
        b.id for b in new for o in old if b.id == o.id and b.names != o.names
    }
    jobs = planned_jobs(finished)
    runs = {rule for rule in jobs if rule.startswith("run_")}
    assert runs == {
        f"run_voice-notes_{stage}_{batch}"
        for stage in ("transcripts", "summaries")
        for batch in changed
    }
    assert len(changed) < len(new)
    untouched = next(n for b in new if b.id not in changed for n in b.names)
    transcript = out(finished, "voice-notes") / "transcripts" / f"{untouched}.txt"
    stamp = transcript.stat().st_mtime_ns
    snakemake(finished, *TWO_JOBS, "voice-notes", *TINY)
    assert (out(finished, "voice-notes") / "summaries" / "zebra crossing.wav.md").is_file()
    assert transcript.stat().st_mtime_ns == stamp
    # In the batches that ran again, only the new file reached a model.
    for stage in ("transcripts", "summaries"):
        rerun = [
            f
            for f in records(finished, "voice-notes", stage).values()
            if any(f["name"] in b.names for b in new if b.id in changed)
        ]
        done = {f["name"] for f in rerun if f["status"] == "done"}
        reused = {f["name"] for f in rerun if "reused_from" in f}
        assert reused == done - {"zebra crossing.wav"}, (stage, rerun)


def test_an_added_file_reruns_its_stage_s_one_job_and_reuses_the_rest(finished):
    """photo-stories sets no batch_size: each stage is one job over every file."""
    before = {
        stage: records(finished, "photo-stories", stage) for stage in ("captions", "descriptions")
    }
    picture(300, 200).save(finished / "inputs" / "images" / "new garden.png")
    runs = {rule for rule in planned_jobs(finished, "photo-stories") if rule.startswith("run_")}
    assert len(runs) == 2
    completed = snakemake(finished, "--cores", "1", "photo-stories", *TINY)
    assert "photo-stories: 7 of 8 files done" in completed.stdout
    for stage, earlier in before.items():
        now = records(finished, "photo-stories", stage)
        assert (
            "reused_from" not in now["new garden.png"] and now["new garden.png"]["status"] == "done"
        )
        done = {name for name, r in earlier.items() if r["status"] == "done"}
        assert {name for name, r in now.items() if "reused_from" in r} == done, stage
        for name in done:
            assert now[name]["text"] == earlier[name]["text"]
    report = (out(finished, "photo-stories") / "REPORT.md").read_text()
    assert "| captions | blip-base (synthetic) | cpu | 7 | 6 | 1 | 0 |" in report


def test_missing_input_folders_are_named_in_one_line(workdir):
    completed = snakemake(workdir, *TWO_JOBS, "pipelines", *TINY)
    assert "voice-notes: no input files: inputs/audio/ does not exist" in completed.stdout
    report = (out(workdir, "visual-qa") / "REPORT.md").read_text()
    assert "**No input files**: inputs/vqa/ does not exist" in report


def test_a_pipeline_declared_in_config_runs_without_code(workdir):
    notes = workdir / "my notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("Water the plants. Pay the rent.", encoding="utf-8")

    def add(config):
        config["pipelines"] = {
            "text-digest": {
                "inputs": "my notes",
                "stages": [
                    {
                        "name": "digests",
                        "model": "qwen2.5-1.5b-instruct",
                        "prompt": "Digest {file}: {previous}",
                        "max_new_tokens": 4,
                    }
                ],
            }
        }

    edit_config(workdir, add)
    completed = snakemake(workdir, "--cores", "1", "text-digest", *TINY)
    assert "text-digest: 1 of 1 files done, 0 failed" in completed.stdout
    assert (out(workdir, "text-digest") / "digests" / "todo.txt.txt").is_file()


def test_a_bad_pipeline_config_stops_with_one_line(workdir):
    edit_config(
        workdir, lambda c: c["pipelines"]["voice-notes"]["stages"][1].update(model="whisper-base")
    )
    completed = snakemake(workdir, "-n", "pipelines", *TINY, check=False)
    assert completed.returncode != 0
    assert (
        "invalid config: pipelines.voice-notes.stages[1].model: 'whisper-base' is a "
        "speech-recognition model; a later stage takes text-generation"
    ) in completed.stdout + completed.stderr


def test_a_pipeline_whose_model_is_not_configured_is_named_not_run(workdir):
    edit_config(workdir, lambda c: c["models"].pop("blip-base"))
    completed = snakemake(workdir, *TWO_JOBS, "pipelines", *TINY)
    assert (
        "photo-stories: not run: pipelines.photo-stories.stages[0].model 'blip-base' is "
        "not a model configured under models"
    ) in completed.stdout
    assert "voice-notes: no input files" in completed.stdout


def test_a_damaged_hub_checkpoint_is_fetched_again_by_its_commit(finished):
    """A stage job checks its model's files first. A damaged Hub checkpoint is fetched
    again by its commit, which offline fails with the reason in each file's record (it
    used to stop with a KeyError). (A damaged synthetic one is rebuilt:
    tests/test_pipeline_engine.py.)"""
    from media_files import write_speech

    weights = finished / "models" / "_tiny" / "whisper-base" / "model.safetensors"
    manifest_path = weights.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(source="hub", resolved_commit="0" * 40)
    manifest_path.write_text(json.dumps(manifest))
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    write_speech(finished / "inputs" / "audio" / "latest.wav", "Another note.")
    snakemake(finished, "--cores", "2", "pipelines", *TINY)
    latest = records(finished, "voice-notes", "transcripts")["latest.wav"]
    assert latest["status"] == "failed"
    assert "checkpoint damaged and not repaired" in latest["reason"]
    assert "fetching again failed" in latest["reason"] and "HF_HUB_OFFLINE" in latest["reason"]
    logs = finished / "results" / "test-machine" / "logs"
    assert not any("KeyError" in p.read_text() for p in logs.rglob("*.log"))

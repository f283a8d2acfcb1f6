"""Pipelines through the inference engine: fewer, larger jobs on an accelerator, compile
caches that outlast a job, no warning per file, and a stage that repairs its model's
damaged checkpoint before opening it (the real snakemake command line, tiny models)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, TINY, snakemake
from localbench.config import model_settings
from localbench.engine.caches import (
    has_own_bytecode,
    use_bytecode_cache,
    use_lasting_compile_caches,
)
from localbench.engine.generation import GREEDY, LENGTH_CLASH_LOGGER, quiet_length_clash
from localbench.engine.loading import load_model
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.pipelines.plan import (
    FILES_PER_JOB,
    check_pipelines,
    job_batches,
    stable_batches,
    stage_settings,
)
from test_pipelines import edit_config, out, records
from transformers import GenerationMixin

NAMES = [f"memo {index:03d}.wav" for index in range(300)]
MODEL = "qwen2.5-1.5b-instruct"
CPU = torch.device("cpu")


def test_every_stage_takes_a_backend_a_decode_batch_and_compile():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["pipelines"]["voice-notes"]["stages"][0].update(backend="eager", decode_batch=4)
    check_pipelines(config)  # a speech stage takes them as a text stage does
    whisper = model_settings(config, "whisper-base")
    settings = stage_settings(config, "voice-notes", 0, whisper)
    assert (settings["backend"], settings["decode_batch"]) == ("eager", 4)
    blip = model_settings(config, "blip-base")
    settings = stage_settings(config, "photo-stories", 0, blip)
    assert settings["backend"] == "fast" and "decode_batch" not in settings
    # Captured, not compiled, unless the stage asks.
    assert settings["compile"] is False
    config["pipelines"]["photo-stories"]["stages"][0]["compile"] = True
    check_pipelines(config)
    assert stage_settings(config, "photo-stories", 0, blip)["compile"] is True


def test_a_stage_runs_as_one_job_up_to_its_cap():
    (one,) = job_batches(NAMES, None)
    assert one.names == tuple(sorted(NAMES))
    many = [f"f{index:05d}.png" for index in range(FILES_PER_JOB + 1)]
    assert job_batches(many, None) == stable_batches(many, FILES_PER_JOB)
    assert job_batches([], None) == []
    # A batch_size in the config is kept.
    assert job_batches(NAMES, 5) == stable_batches(NAMES, 5)
    assert len(job_batches(NAMES, 5)) > 1


def test_compile_caches_go_under_the_users_cache_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert use_lasting_compile_caches() == {
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "xdg" / "localbench" / "inductor"),
        "TRITON_CACHE_DIR": str(tmp_path / "mine"),
    }
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as XDG says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    caches = use_lasting_compile_caches()
    assert caches["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "home/.cache/localbench/inductor")


def test_bytecode_goes_to_the_cache_where_python_was_told_to_write_none(monkeypatch, tmp_path):
    # A package installed without bytecode, in an environment that says write none.
    package = tmp_path / "site" / "nobytecode"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert not has_own_bytecode("nobytecode")
    environ = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path / "site")}
    assert use_bytecode_cache("never", environ) is None and "PYTHONPYCACHEPREFIX" not in environ
    folder = use_bytecode_cache("always", environ)
    assert folder == str(tmp_path / "xdg" / "localbench" / "pycache")
    assert "PYTHONDONTWRITEBYTECODE" not in environ
    subprocess.run([sys.executable, "-c", "import nobytecode"], env=environ, check=True)
    cached = list(Path(folder).rglob("nobytecode/__init__.*.pyc"))  # under its path
    assert len(cached) == 1 and str(package).lstrip("/") in str(cached[0])
    assert not (package / "__pycache__").exists()  # nothing beside the sources
    # Bytecode beside the sources, or a prefix the user chose: left as it is.
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "__init__.cpython-312.pyc").write_bytes(b"")
    assert has_own_bytecode("nobytecode")
    mine = {"PYTHONPYCACHEPREFIX": "/elsewhere", "PYTHONDONTWRITEBYTECODE": "1"}
    assert use_bytecode_cache("always", mine) is None
    assert mine == {"PYTHONPYCACHEPREFIX": "/elsewhere", "PYTHONDONTWRITEBYTECODE": "1"}
    with pytest.raises(ValueError, match="bytecode_cache"):
        use_bytecode_cache("sometimes", {})


def test_a_token_budget_beside_the_models_max_length_warns_no_more(caplog, tmp_path):
    build_synthetic_checkpoint("openai/whisper-base", "tiny", tmp_path / "whisper")
    loaded = load_model(tmp_path / "whisper", "speech-recognition", torch.float32, CPU)
    assert loaded.model.generation_config.max_length  # Whisper's: 448
    silence = np.zeros(16_000, np.float32)
    features = loaded.processor(silence, sampling_rate=16_000, return_tensors="pt")
    start = torch.tensor([[loaded.model.generation_config.decoder_start_token_id]])
    caplog.clear()
    for _ in range(2):
        GenerationMixin.generate(
            loaded.model,
            input_features=features.input_features,
            decoder_input_ids=start,
            max_new_tokens=3,
            **GREEDY,
        )
    logging.getLogger(LENGTH_CLASH_LOGGER).warning("another notice")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["another notice"]  # only the budget's notice is dropped
    quiet_length_clash()  # once per process, however many models a job loads
    assert len(logging.getLogger(LENGTH_CLASH_LOGGER).filters) == 1


def test_a_stage_repairs_its_damaged_checkpoint_then_runs_its_files(workdir):
    """The real command line: the model fetched, its weights truncated after the manifest
    was written, then the pipeline: the stage rebuilds the weights and every file is done."""
    notes = workdir / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("Water the plants. Pay the rent.", encoding="utf-8")
    (notes / "trip.md").write_text("Train at nine, hotel by the harbour.", encoding="utf-8")

    def digest_only(config):
        config["pipelines"] = {
            "digest": {
                "inputs": "notes",
                "stages": [
                    {
                        "name": "digests",
                        "model": MODEL,
                        "prompt": "Digest {file}: {previous}",
                        "max_new_tokens": 4,
                    }
                ],
            }
        }

    edit_config(workdir, digest_only)
    manifest = workdir / "models" / "_tiny" / MODEL / "manifest.json"
    snakemake(workdir, "--cores", "1", str(manifest.relative_to(workdir)), *TINY)
    weights = manifest.parent / "model.safetensors"
    whole = weights.read_bytes()
    with open(weights, "r+b") as handle:
        handle.truncate(len(whole) // 2)

    began = time.time()
    completed = snakemake(workdir, "--cores", "1", "digest", *TINY)
    assert "digest: 2 of 2 files done, 0 failed" in completed.stdout
    assert weights.read_bytes() == whole  # rebuilt: synthetic builds are seeded
    digests = records(workdir, "digest", "digests")
    assert {name: r["status"] for name, r in digests.items()} == {
        "todo.txt": "done",
        "trip.md": "done",
    }
    (batch,) = (out(workdir, "digest") / "batches" / "digests").glob("*.json")
    record = json.loads(batch.read_text())
    assert record["backend"] == "fast" and record["settings"]["backend"] == "fast"
    assert record["load_s"] > 0
    # Where the job's time went before its files: the repair took longer than a check,
    # and the imports (torch, transformers) take a measurable time.
    assert record["check_s"] > 0
    assert record["startup"]["imports_s"] > 0.1
    assert record["startup"]["before_script_s"] is None or record["startup"]["before_script_s"] >= 0
    # The job's process started within this command (the timeline of a run).
    started = record["startup"]["process_started_unix"]
    assert started is None or began - 1 <= started <= batch.stat().st_mtime
    assert record["engine"]["compiled"] is False

"""The hardware profile and device remembered between commands, and the job that checks them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import snakemake
from localbench.atomic import read_json, write_json
from localbench.measure import hardware_cache
from localbench.measure.hardware import detect

WORKFLOW = Path(__file__).resolve().parent.parent / "workflow"
# A fresh interpreter: what detected() answers, and whether it imported torch for it.
ASK = (
    "import json, sys; from localbench.measure.hardware_cache import detected; "
    "answer = detected(sys.argv[1]); print(json.dumps([answer, 'torch' in sys.modules]))"
)


def ask(cache: Path, device: str = "auto", **environment: str) -> tuple[dict, bool]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(WORKFLOW)}
    env.update(environment)
    completed = subprocess.run(
        [sys.executable, "-c", ASK, device], capture_output=True, text=True, env=env, check=True
    )
    answer, imported_torch = json.loads(completed.stdout)
    return answer, imported_torch


def test_a_second_command_is_answered_without_torch(tmp_path):
    truth = detect("auto")
    first, first_imported = ask(tmp_path)
    second, second_imported = ask(tmp_path)
    assert first == second == {"profile": truth["profile"], "accelerator": truth["accelerator"]}
    assert first_imported and not second_imported
    assert len(list((tmp_path / "localbench" / "hardware").glob("*.json"))) == 1


def test_what_could_change_the_answer_asks_torch_again(tmp_path):
    ask(tmp_path)
    # Hiding the GPUs, asking for another device: each its own entry, each asked of torch.
    assert ask(tmp_path, CUDA_VISIBLE_DEVICES="")[1]
    answer, imported = ask(tmp_path, device="cpu")
    assert imported and answer["accelerator"] == "cpu"
    assert len(list((tmp_path / "localbench" / "hardware").glob("*.json"))) == 3
    assert not ask(tmp_path, device="cpu")[1]


def test_a_damaged_entry_is_asked_again_and_replaced(tmp_path):
    ask(tmp_path)
    (entry,) = (tmp_path / "localbench" / "hardware").glob("*.json")
    entry.write_text('{"key": ', encoding="utf-8")
    answer, imported = ask(tmp_path)
    assert imported and answer["profile"] == detect("auto")["profile"]
    assert read_json(entry)["detected"] == answer


def test_an_unwritable_cache_costs_only_the_time(tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("", encoding="utf-8")
    answer, imported = ask(blocked)
    assert imported and answer["profile"] == detect("auto")["profile"]


def test_an_unavailable_device_is_never_remembered(tmp_path):
    if detect("auto")["accelerator"] != "cpu":
        pytest.skip("this machine has an accelerator")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(WORKFLOW)}
    completed = subprocess.run(
        [sys.executable, "-c", ASK, "cuda"], capture_output=True, text=True, env=env
    )
    assert completed.returncode == 1
    assert "device: cuda was asked for, but torch sees no CUDA GPU here" in completed.stderr
    assert not list(tmp_path.glob("localbench/hardware/*.json"))


def test_the_planned_profile_is_held_to_the_job_s_own_detection():
    record = {"profile": "cpu-some-chip-2c-24gb"}
    hardware_cache.check_planned_profile(record, "cpu-some-chip-2c-24gb", None, "full")
    hardware_cache.check_planned_profile(record, "cpu-some-chip-2c-24gb-tiny", "", "tiny")
    hardware_cache.check_planned_profile(record, "my-name", "my-name", "full")
    with pytest.raises(ValueError, match="planned for hardware profile 'cuda-x-80gb'"):
        hardware_cache.check_planned_profile(record, "cuda-x-80gb", None, "full")


def test_a_wrong_remembered_profile_stops_the_run_once_and_is_corrected(
    workdir, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    truth = detect("auto")
    forged = {"profile": "cuda-forged-gpu-80gb", "accelerator": "cuda"}
    # The entry the workflow's parse reads: same interpreter, host and variables as here.
    write_json(
        hardware_cache._entry_path(hardware_cache.machine_key("auto")),
        {"key": hardware_cache.machine_key("auto"), "detected": forged},
    )
    tiny = ("--config", "size=tiny", "weights=synthetic")
    failed = snakemake(
        workdir, "--cores", "1", "results/cuda-forged-gpu-80gb-tiny/hardware.json", *tiny,
        check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    log = (workdir / "results/cuda-forged-gpu-80gb-tiny/logs/detect_hardware.log").read_text()
    assert (
        "this run was planned for hardware profile 'cuda-forged-gpu-80gb-tiny', but this job "
        f"detects '{truth['profile']}-tiny'"
    ) in log
    assert not (workdir / "results/cuda-forged-gpu-80gb-tiny/hardware.json").exists()
    # The job's own answer replaced the wrong one: the next command plans the real profile.
    assert hardware_cache.detected("auto") == {
        "profile": truth["profile"],
        "accelerator": truth["accelerator"],
    }
    real = f"results/{truth['profile']}-tiny/hardware.json"
    snakemake(workdir, "--cores", "1", real, *tiny)
    assert read_json(workdir / real)["profile"] == f"{truth['profile']}-tiny"


def test_planning_a_run_imports_no_torch_once_the_machine_is_known(workdir, tmp_path):
    """Every snakemake command, dry runs included, parses the workflow: with the answer
    remembered, the parse must not start torch (about 1 s here, 5 s on an H200 machine)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [
        sys.executable, "-X", "importtime", "-m", "snakemake",
        "-s", str(WORKFLOW.parent / "Snakefile"), "--directory", str(workdir),
        "--cores", "1", "-n", "report", "--config", "size=tiny", "weights=synthetic",
    ]  # fmt: skip
    imported = []
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        modules = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
        imported.append("torch" in modules)
    assert imported == [True, False]

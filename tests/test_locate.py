"""The results folder `make report` names the HTML report after, as the workflow names it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from localbench.measure.hardware import detect
from localbench.report.locate import main, run_config, run_profile

ROOT = Path(__file__).resolve().parent.parent


def test_the_folder_of_a_run_with_these_config_words(tmp_path, monkeypatch, capsys):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["size=tiny", "profile=test-machine"]) == 0
    assert capsys.readouterr().out == "results/test-machine\n"
    detected = detect("auto")["profile"]
    assert run_profile(run_config(["size=tiny"])) == f"{detected}-tiny"
    assert run_profile(run_config([])) == detected


def test_a_bad_word_gives_one_line_and_no_folder(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    completed = subprocess.run(
        [sys.executable, "-m", "localbench.report.locate", "device=gpu"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "workflow"), *path])},
        timeout=300,
    )
    assert completed.returncode == 1 and completed.stdout == ""
    assert completed.stderr.strip() == (
        "invalid config: device: 'gpu' is not allowed; allowed values: auto, cuda, mps, cpu"
    )

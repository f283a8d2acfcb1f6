"""Shared fixtures: run the real `snakemake` command line in a temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Without a GPU, Triton kernels (the fast backend's decode attention) run in Triton's
# interpreter on CPU tensors; the switch is read when Triton is imported.
if not shutil.which("nvidia-smi"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake on this repository's Snakefile with ``workdir`` as working folder."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf-home")}
    env.pop("HF_TOKEN", None)
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if check and completed.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
        )
    return completed


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working folder holding a copy of the shipped config.yaml."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


TINY = ("--config", "size=tiny", "weights=synthetic", "profile=test-machine")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("tiny-run")
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    snakemake(workdir, "--cores", "2", "report", *TINY)
    return workdir / "results" / "test-machine"

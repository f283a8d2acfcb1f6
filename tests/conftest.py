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


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run snakemake on this repository's Snakefile with ``workdir`` as working folder
    (killed, and the test failed, after ``timeout`` seconds)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf-home")}
    env.pop("HF_TOKEN", None)
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
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
# Two jobs at a time. The warm-up, benchmark and pipeline rules claim every core a run is
# given, so that nothing runs beside a measurement (tests/test_threads.py checks the
# claim); on tiny models nothing is measured for its own sake, and --max-threads 1 lets
# two such jobs share this project's two cores. Torch inside a job still runs on the
# config's `threads`, whatever the job claims.
TWO_JOBS = ("--cores", "2", "--max-threads", "1")


# A tiny synthetic Qwen2.5 on the CPU in float32: the model settings of text stages
# tested through the engine (tests/test_text_stage.py, tests/test_pipeline_reuse.py).
TINY_QWEN = {
    "name": "qwen2.5-1.5b-instruct",
    "task": "text-generation",
    "repo": "Qwen/Qwen2.5-1.5B-Instruct",
    "revision": "main",
    "allow_pickle": False,
    "dtype": "float32",
    "device": "cpu",
    "weights": "synthetic",
    "size": "tiny",
}


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    """:data:`TINY_QWEN` built once: its model settings, manifest and folder."""
    from localbench.fetch.acquire import acquire

    folder = tmp_path_factory.mktemp("tiny-qwen") / "model"
    manifest = acquire({**TINY_QWEN, "memory_headroom_gb": 0.5}, folder)
    assert manifest["status"] == "ready", manifest
    return dict(TINY_QWEN), manifest, folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("tiny-run")
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    snakemake(workdir, *TWO_JOBS, "report", *TINY)
    return workdir / "results" / "test-machine"


@pytest.fixture(scope="session")
def tiny_checkpoint_model(tmp_path_factory):
    """Load the tiny synthetic model of a repository (float32, on the GPU if there is
    one), once per session: ``tiny_checkpoint_model(repo)``."""
    import torch
    from localbench.engine.loading import load_model
    from localbench.fetch.synthetic import build_synthetic_checkpoint

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = {}

    def load(repo):
        if repo not in loaded:
            folder = tmp_path_factory.mktemp("tiny-checkpoint") / "model"
            build_synthetic_checkpoint(repo, "tiny", folder)
            loaded[repo] = load_model(folder, "text-generation", torch.float32, device)
        return loaded[repo]

    return load


def trace_as_one_graph(fn, *args):
    """Trace and run ``fn(*args)`` as one graph (``fullgraph=True``), as CUDA graph capture
    needs: a graph break raises. Dynamo's caches are reset first, since a session compiles
    the same decoder methods for many models and would reach its recompilation limit."""
    import torch

    torch._dynamo.reset()
    with torch.inference_mode():
        return torch.compile(fn, fullgraph=True, backend="eager")(*args)

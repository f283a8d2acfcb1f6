"""The install: requirements that resolve on every platform the README names, the PyTorch
build `make` picks for each kind of machine, the Python check, one source for the
dependency list."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "envs" / "install.sh"
PYPI = "https://pypi.org/simple"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTHONS = ("3.11", "3.12", "3.13")
# (name, uv's --python-platform, where torch comes from, extra environment)
PLATFORMS = [
    pytest.param(*platform, id=platform[0])
    for platform in (
        ("linux-x86_64-cuda", "x86_64-manylinux_2_28", PYPI, {}),
        ("linux-x86_64-cpu", "x86_64-manylinux_2_28", CPU_INDEX, {}),
        ("linux-aarch64-cuda", "aarch64-manylinux_2_28", PYPI, {}),
        ("linux-aarch64-cpu", "aarch64-manylinux_2_28", CPU_INDEX, {}),
        # torch 2.13's macOS wheels are built for macOS 14 (Sonoma) and newer.
        ("macos-arm64", "aarch64-apple-darwin", PYPI, {"MACOSX_DEPLOYMENT_TARGET": "14.0"}),
    )
]
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_files() -> list[Path]:
    """Every requirements file of the project: what `make` and `make lock` read."""
    return sorted(ROOT.glob("requirements*.txt"))


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def requirement_name(line: str) -> str:
    return re.sub(r"[-_.]+", "-", REQUIREMENT.match(line).group(1)).lower()


def locked_pins() -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for line in requirement_lines(ROOT / "requirements.lock"):
        name, _, version = line.split(" ;")[0].partition("==")
        pins.setdefault(requirement_name(name), set()).add(version.strip())
    return pins


def index_answers(url: str) -> str | None:
    """None when the package index at ``url`` answers, else why not."""
    request = urllib.request.Request(f"{url}/torch/", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=20):
            return None
    except OSError as error:
        return f"{url} does not answer: {error}"


@pytest.fixture(scope="module")
def uv() -> str:
    found = shutil.which("uv", path=str(Path(os.sys.executable).parent)) or shutil.which("uv")
    if not found:
        pytest.fail("uv is not installed; it comes with requirements-test.txt")
    return found


def uv_compile(uv: str, args: list[str], env: dict[str, str], stdin: str | None = None):
    """``uv pip compile`` against the public index alone: uv never reads pip's
    configuration (this machine's local wheels and torch cap), and --no-config with a
    clean environment keeps uv's own settings out as well."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    command = [
        uv,
        "pip",
        "compile",
        "--quiet",
        "--no-config",
        "--no-header",
        "--no-annotate",
        *args,
    ]
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, env={**clean, **env}, timeout=600
    )


def resolve_for(uv: str, platform: str, torch_index: str, env: dict, python: str) -> dict:
    """What a new user's pip gets on one platform and Python: every requirements file,
    with the lock as constraints, resolved against the public index without installing
    (and torch alone from ``torch_index`` where that is not PyPI). Returns the failure
    (``error``) or the resolved names (``resolved``), or why it was skipped."""
    for url in {PYPI, torch_index}:
        if reason := index_answers(url):
            return {"skip": reason}
    target = ["--python-platform", platform, "--python-version", python]
    lock = ROOT / "requirements.lock"
    constraints = ["-c", str(lock)] if lock.exists() else []
    if torch_index != PYPI:
        # `make` takes torch alone from that index and its dependencies from PyPI with the
        # rest; the CPU build depends on a subset of what the PyPI build depends on.
        args = ["--no-deps", "--default-index", torch_index, *target, *constraints, "-"]
        completed = uv_compile(uv, args, env, stdin="torch\n")
        if completed.returncode != 0:
            return {"error": f"torch from {torch_index}:\n{completed.stderr}"}
    files = [str(path) for path in requirement_files()]
    completed = uv_compile(uv, ["--default-index", PYPI, *target, *constraints, *files], env)
    if completed.returncode != 0:
        return {"error": completed.stderr}
    return {"resolved": {requirement_name(line) for line in completed.stdout.splitlines()}}


@pytest.fixture(scope="module")
def resolutions(uv) -> dict[tuple[str, str], dict]:
    """Every platform and Python resolved at once: each resolution waits on the index
    far more than it computes, so they run side by side."""
    cases = [(p.values, python) for p in PLATFORMS for python in PYTHONS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(cases)) as pool:
        futures = {
            (values[0], python): pool.submit(resolve_for, uv, *values[1:], python)
            for values, python in cases
        }
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize(("name", "platform", "torch_index", "env"), PLATFORMS)
def test_requirements_resolve_from_the_public_index(
    resolutions, name, platform, torch_index, env, python
):
    """What a new user's pip gets, on each platform (see resolve_for)."""
    outcome = resolutions[(name, python)]
    if "skip" in outcome:
        pytest.skip(f"{name}: {outcome['skip']}")
    assert "error" not in outcome, f"{name}, Python {python}: {outcome.get('error')}"
    assert "torch" in outcome["resolved"]


def test_every_requirement_is_locked_at_its_pinned_version():
    """`make` installs with requirements.lock as constraints: a requirement added or
    re-pinned without `make lock` would be installed at a version nobody resolved."""
    pins = locked_pins()
    for path in requirement_files():
        for line in requirement_lines(path):
            name = requirement_name(line)
            assert name in pins, f"{path.name}: {name} is not in requirements.lock (make lock)"
            if match := re.search(r"==\s*([^\s;,]+)", line.split(";")[0]):
                assert pins[name] == {match.group(1)}, (
                    f"{path.name}: {line} but locked {pins[name]}"
                )


def test_conda_environment_lists_the_requirements():
    """envs/localbench.yaml (for --sdm conda) repeats requirements.txt line for line."""
    environment = yaml.safe_load((ROOT / "envs" / "localbench.yaml").read_text())
    pip_lines = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert pip_lines == requirement_lines(ROOT / "requirements.txt")


# --- the install script, run with a PATH of stand-in commands --------------------------


def stand_in(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path):
    """A PATH holding only the commands a machine under test has: ``machine(system=...,
    gpu=..., pythons={"python3": "3.9.6"})`` returns the environment to run with."""

    def make(system="Linux", gpu=None, pythons=None, **env):
        folder = tmp_path / "bin"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for tool in ("sh", "cat", "grep", "make"):
            os.symlink(shutil.which(tool), folder / tool)
        stand_in(folder, "uname", f'[ "$1" = -s ] && echo {system} || echo x86_64')
        if gpu == "working":
            stand_in(folder, "nvidia-smi", "echo 'GPU 0: NVIDIA H200 (UUID: GPU-0)'")
        elif gpu == "no driver":
            stand_in(folder, "nvidia-smi", "echo 'NVIDIA-SMI has failed'; exit 9")
        for name, version in (pythons or {"python3": "3.12.4"}).items():
            stand_in(folder, name, f"echo {version} /opt/python/{name}")
        return {"PATH": str(folder), "HOME": str(tmp_path), **env}

    return make


def planned(env: dict[str, str], venv: Path) -> list[str]:
    completed = subprocess.run(
        ["/bin/sh", str(INSTALL), "--print", str(venv), "requirements.txt"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.splitlines()


def torch_index_of(commands: list[str]) -> str | None:
    """The index torch is installed from on its own, None when it comes from PyPI."""
    for command in commands:
        if match := re.search(r"--no-deps --index-url (\S+) .*torch$", command):
            return match.group(1)
    return None


@pytest.mark.parametrize(
    ("system", "gpu", "torch_choice", "expected"),
    [
        ("Linux", None, "auto", CPU_INDEX),
        ("Linux", "no driver", "auto", CPU_INDEX),
        ("Linux", "working", "auto", None),
        ("Darwin", None, "auto", None),
        ("Linux", "working", "cpu", CPU_INDEX),
        ("Linux", None, "pypi", None),
        (
            "Linux",
            None,
            "https://download.pytorch.org/whl/cu126",
            "https://download.pytorch.org/whl/cu126",
        ),
    ],
)
def test_the_pytorch_build_follows_the_machine(
    machine, tmp_path, system, gpu, torch_choice, expected
):
    venv = tmp_path / "venv"
    commands = planned(machine(system=system, gpu=gpu, TORCH=torch_choice), venv)
    assert torch_index_of(commands) == expected
    assert commands[0] == f"/opt/python/python3 -m venv --clear {venv}"
    everything = [c for c in commands if " -r requirements.txt" in c]
    assert everything and all("-c requirements.lock" in c for c in everything)
    assert commands[-1].endswith("pip install --quiet --no-deps -e .")


def test_switching_build_replaces_the_installed_torch(machine, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stand_in(venv / "bin", "python", "echo 3.12.4 /opt/python/python3")
    (venv / ".torch-source").write_text("pypi\n")
    commands = planned(machine(gpu=None), venv)
    assert not any("-m venv" in c for c in commands), "a working venv is reused"
    assert any(c.endswith("pip uninstall --quiet --yes torch") for c in commands)
    assert torch_index_of(commands) == CPU_INDEX
    (venv / ".torch-source").write_text(CPU_INDEX + "\n")
    assert not any("uninstall" in c for c in planned(machine(gpu=None), venv))


def test_a_newer_python_is_looked_for_when_python3_is_old(machine, tmp_path):
    env = machine(pythons={"python3": "3.9.6", "python3.12": "3.12.4"})
    venv = tmp_path / "venv"
    assert planned(env, venv)[0] == f"/opt/python/python3.12 -m venv --clear {venv}"


def test_an_unknown_torch_choice_is_one_line(machine):
    completed = subprocess.run(
        ["/bin/sh", str(INSTALL), "--print", ".venv", "requirements.txt"],
        capture_output=True,
        text=True,
        env=machine(TORCH="rocm"),
        cwd=ROOT,
        timeout=60,
    )
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines() == [
        "error: TORCH=rocm: expected auto, cpu, pypi or an index URL"
    ]


@pytest.mark.parametrize(
    ("pythons", "found"),
    [
        ({"python3": "3.9.6"}, "python3 is Python 3.9.6"),
        ({}, "there is no python3 on the PATH"),
    ],
)
def test_make_report_stops_at_once_without_python_3_11(machine, tmp_path, pythons, found):
    """`make report` with only an old python3 (Apple's 3.9): one line, nothing installed."""
    project = tmp_path / "project"
    (project / "envs").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "requirements.txt", "requirements.lock"):
        shutil.copy(ROOT / name, project / name)
    shutil.copy(INSTALL, project / "envs" / "install.sh")
    env = machine(pythons=pythons)
    if not pythons:
        (Path(env["PATH"]) / "python3").unlink()
    completed = subprocess.run(
        ["make", "report"], capture_output=True, text=True, env=env, cwd=project, timeout=60
    )
    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if not line.startswith("make")]
    assert len(errors) == 1, completed.stderr
    assert errors[0].startswith(f"error: localbench needs Python 3.11 or newer; {found}")
    assert "brew install python@3.12" in errors[0] and "uv python install 3.12" in errors[0]
    assert not (project / ".venv").exists()

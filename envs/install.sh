#!/bin/sh
# Creates the virtual environment and installs localbench into it: the one install path
# behind `make report`, `make test` and `make pipelines`.
#
#   sh envs/install.sh [--print] VENV REQUIREMENTS_FILE...
#
# --print     print the commands it would run, one a line, and run none of them
# PYTHON      the interpreter to build VENV with; empty: python3 if it is 3.11 or newer,
#             else the first of python3.13, python3.12, python3.11 on the PATH
# TORCH       which build of PyTorch: auto (default), cpu (PyTorch's CPU wheel index),
#             pypi (PyPI's build: CUDA 13 on Linux, Metal on macOS), or an index URL
#             (for example https://download.pytorch.org/whl/cu126 for an older driver)
#
# auto means cpu on Linux without a working NVIDIA driver (nvidia-smi lists no GPU) and
# pypi everywhere else. Versions come from requirements.lock, used as constraints.
set -eu

CPU_INDEX=https://download.pytorch.org/whl/cpu
LOCK=requirements.lock
NEEDED="3.11"

dry_run=""
if [ "${1:-}" = "--print" ]; then
    dry_run=1
    shift
fi
[ $# -ge 2 ] || { echo "usage: sh envs/install.sh [--print] VENV REQUIREMENTS_FILE..." >&2; exit 2; }
venv=$1
shift

run() {
    if [ -n "$dry_run" ]; then
        echo "$*"
    else
        "$@"
    fi
}

# Prints "3.12.1 /path/to/python3.12" for a Python interpreter, nothing for anything else.
python_probe() {
    "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3], sys.executable)' 2>/dev/null || true
}

# True for a version string of 3.11 or newer.
new_enough() {
    major=${1%%.*}
    rest=${1#*.}
    minor=${rest%%.*}
    case "$major$minor" in '' | *[!0-9]*) return 1 ;; esac
    [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -ge 11 ]; }
}

# The interpreter to build the venv with (its real path), checked before anything else.
find_python() {
    if [ -n "${PYTHON:-}" ]; then
        candidates=$PYTHON
    else
        candidates="python3 python3.13 python3.12 python3.11"
    fi
    found=""
    for name in $candidates; do
        path=$(command -v "$name" 2>/dev/null) || continue
        probe=$(python_probe "$path")
        version=${probe%% *}
        if [ -n "$probe" ] && new_enough "$version"; then
            echo "${probe#* }"
            return 0
        fi
        [ -n "$found" ] || found="$name is Python ${version:-of unknown version} ($path)"
    done
    if [ -n "${PYTHON:-}" ]; then
        found="PYTHON=${found:-$PYTHON is not found}"
    elif [ -n "$found" ]; then
        found="$found and there is no python3.13, python3.12 or python3.11 on the PATH"
    else
        found="there is no python3 on the PATH"
    fi
    echo "error: localbench needs Python $NEEDED or newer; $found. Install one, e.g. 'brew install python@3.12' (macOS), 'sudo apt install python3.12-venv' (Debian, Ubuntu) or 'uv python install 3.12', and run make again, naming it if it is not on the PATH: make report PYTHON=python3.12" >&2
    return 1
}

# auto -> cpu or pypi; cpu -> the CPU index; pypi and URLs as given.
torch_source() {
    choice=${TORCH:-auto}
    if [ "$choice" = auto ]; then
        choice=pypi
        if [ "$(uname -s)" = Linux ]; then
            nvidia-smi -L 2>/dev/null | grep -q '^GPU' || choice=cpu
        fi
    fi
    case "$choice" in
        cpu) echo "$CPU_INDEX" ;;
        pypi | http://* | https://* | file://*) echo "$choice" ;;
        *)
            echo "error: TORCH=$choice: expected auto, cpu, pypi or an index URL" >&2
            return 1
            ;;
    esac
}

python=$(find_python)
source=$(torch_source)
vpy=$venv/bin/python

# A venv left by an older Python (or a broken one) is rebuilt, not reused.
venv_version=""
[ -x "$vpy" ] && venv_version=$(python_probe "$vpy")
venv_version=${venv_version%% *}
if [ -z "$venv_version" ] || ! new_enough "$venv_version"; then
    run "$python" -m venv --clear "$venv"
fi

requirements=""
for file in "$@"; do
    requirements="$requirements -r $file"
done

marker=$venv/.torch-source
previous=$(cat "$marker" 2>/dev/null || true)
echo "localbench: PyTorch from ${source} (TORCH=${TORCH:-auto}; README, \"Which PyTorch\")" >&2
run "$vpy" -m pip install --quiet --upgrade pip
# Switching build: the installed torch satisfies the pin whichever build it is.
if [ -n "$previous" ] && [ "$previous" != "$source" ]; then
    run "$vpy" -m pip uninstall --quiet --yes torch
fi
# From another index, torch alone: its dependencies then come from PyPI with the rest.
if [ "$source" != pypi ]; then
    run "$vpy" -m pip install --quiet --no-deps --index-url "$source" -c "$LOCK" torch || {
        echo "error: torch could not be installed from $source; choose another build, e.g. make report TORCH=pypi (README, \"Which PyTorch\")" >&2
        exit 1
    }
fi
# shellcheck disable=SC2086 # one word per -r and file
run "$vpy" -m pip install --quiet $requirements -c "$LOCK"
run "$vpy" -m pip install --quiet --no-deps -e .
if [ -z "$dry_run" ]; then
    echo "$source" > "$marker"
fi

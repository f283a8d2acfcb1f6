"""What a new process pays before a pipeline job's model work starts, step by step.

    python3 benchmarks/startup_costs.py [--repeat 3] [--importtime 30]

Each line is a fresh interpreter that runs one snippet, timed from outside (process
start to exit), ``--repeat`` times: an empty interpreter, ``import torch``, torch's
CUDA checks (the ones the Snakefile's ``device: auto`` and hardware profile make),
``import transformers``, the imports of a pipeline stage job, ``import snakemake`` and
``snakemake --version``. Then one ``python -X importtime`` of the stage job's imports,
the ``--importtime`` modules with the largest cumulative times. Standard library only
here; run it with the interpreter and PYTHONPATH the jobs use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

WORKFLOW = str(Path(__file__).resolve().parent.parent / "workflow")

STAGE_IMPORTS = (
    f"import sys; sys.path.insert(0, {WORKFLOW!r}); "
    "from localbench.pipelines.batch import run_stage_batch"
)
SNIPPETS = {
    "empty interpreter": "pass",
    "import torch": "import torch",
    "torch + cuda.is_available()": "import torch; torch.cuda.is_available()",
    "torch + device properties": (
        "import torch; torch.cuda.is_available() and torch.cuda.get_device_properties(0)"
    ),
    "torch + a CUDA tensor": (
        "import torch; torch.cuda.is_available() and torch.zeros(1, device='cuda')"
    ),
    "import transformers": "import transformers",
    "torch + transformers": "import torch, transformers",
    "stage job imports": STAGE_IMPORTS,
    "stage job imports + CUDA tensor": (
        STAGE_IMPORTS + "; import torch; torch.cuda.is_available() and "
        "torch.zeros(1, device='cuda')"
    ),
    "torch + cuda.init()": "import torch; torch.cuda.init()",
    # Whether CUDA's start (driver, context) overlaps the imports when a thread starts it
    # right after torch is imported.
    "torch, CUDA started in a thread, stage job imports": (
        "import threading, torch; started = threading.Thread(target=torch.cuda.init); "
        "started.start(); " + STAGE_IMPORTS + "; started.join()"
    ),
    "import snakemake": "import snakemake.api",
    "hardware profile (Snakefile)": (
        f"import sys; sys.path.insert(0, {WORKFLOW!r}); "
        "from localbench.measure.hardware import detect; detect('auto')"
    ),
}


def timed(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--importtime", type=int, default=30)
    parser.add_argument("--only", nargs="+", help="these snippets (their names), in turn")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, PYTHONPATH={os.environ.get('PYTHONPATH', '')}")
    if args.only:
        # In turn, A B A B: a machine that drifts weighs on every snippet alike.
        for _ in range(args.repeat):
            for name in args.only:
                print(f"{name:50s} {timed(SNIPPETS[name]):6.2f}", flush=True)
        return
    for name, code in SNIPPETS.items():
        seconds = [timed(code) for _ in range(args.repeat)]
        print(f"{name:34s} " + " ".join(f"{s:6.2f}" for s in seconds))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--version"], check=True)
    print(f"{'snakemake --version':34s} {time.perf_counter() - start:6.2f}")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", STAGE_IMPORTS],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print("largest cumulative import times (s) of the stage job's imports:")
    for microseconds, module in sorted(rows, reverse=True)[: args.importtime]:
        print(f"  {microseconds / 1e6:6.2f} {module}")


if __name__ == "__main__":
    main()

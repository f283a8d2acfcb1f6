"""Snakemake script: archive this profile's results (a new file every time)."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

import pandas as pd
from localbench.logs import job_log
from localbench.report.archive import create_archive
from localbench.status import MEASURED

with job_log(snakemake.log[0]) as log:  # noqa: F821 - injected by Snakemake
    table = pd.read_csv(snakemake.input.table)  # noqa: F821
    target = create_archive(
        Path(snakemake.input.table).parent,  # noqa: F821
        [Path(p) for p in snakemake.input.manifests],  # noqa: F821
        Path("archive"),
        snakemake.params.profile,  # noqa: F821
        measured=int((table["status"] == MEASURED).sum()),
        results=len(table),
    )
    log.info("archived to %s", target)
    print(f"archived {snakemake.params.profile} to {target}", file=sys.__stderr__)  # noqa: F821

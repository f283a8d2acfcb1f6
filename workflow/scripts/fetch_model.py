"""Snakemake script: fetch or build one model's checkpoint and write its manifest."""

import sys
from pathlib import Path

# The library lives beside this folder; a conda env made by --sdm conda does not install it.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821


from localbench.atomic import read_json, write_json
from localbench.fetch.acquire import acquire
from localbench.logs import job_log
from localbench.results import FAILED, now_utc, one_line

settings = read_json(snakemake.input.settings)  # noqa: F821 - injected by Snakemake
manifest_path = Path(snakemake.output[0])  # noqa: F821

with job_log(snakemake.log[0]) as log:  # noqa: F821
    try:
        manifest = acquire(settings, manifest_path.parent)
    except Exception as error:  # noqa: BLE001 - one model's failure must not stop the others
        log.exception("fetching %s failed", settings["name"])
        manifest = {
            "model": settings["name"],
            "repo": settings["repo"],
            "revision": settings["revision"],
            "status": FAILED,
            "reason": f"fetch failed: {one_line(error)}",
            "created_at": now_utc(),
        }
    log.info("manifest: %s", manifest)
    write_json(manifest_path, manifest)

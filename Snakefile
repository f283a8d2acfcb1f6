# localbench: how fast do local AI models really run on this machine?
#
#   snakemake --cores 1 report      fetch, warm up, benchmark, aggregate, summarise
#   snakemake --cores 1 pipelines   run the configured pipelines over inputs/ folders
#
# Rules are thin: the work is done by the `localbench` package in workflow/.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from localbench.config import ConfigError
from localbench.config_files import check_config_file

# Snakemake reads config.yaml below with a loader that gives a traceback for a file that
# is not UTF-8 or is nested too deep, and runs the code of a YTE template: the file is
# checked first, without running anything in it. (Files given with --configfile are read
# by Snakemake's command line before this workflow runs: rules/common.smk checks them.)
if Path("config.yaml").exists():
    try:
        check_config_file("config.yaml")
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/hardware.smk"
include: "rules/models.smk"
include: "rules/benchmark.smk"
include: "rules/summary.smk"
include: "rules/archive.smk"
include: "rules/pipelines.smk"


rule report:
    default_target: True
    input:
        summary=f"{RESULTS}/SUMMARY.md",
        chart=f"{RESULTS}/chart.svg",
        table=f"{RESULTS}/benchmarks.csv",

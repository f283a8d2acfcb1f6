# localbench: how fast do local AI models really run on this machine?
#
#   snakemake --cores 1 report      fetch, warm up, benchmark, aggregate, summarise
#   snakemake --cores 1 pipelines   run the configured pipelines over inputs/ folders
#   snakemake --report results/<profile>/report.html html_report
#                                   the HTML report of what those runs made (make report)
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


# The front page of the HTML report (`snakemake --report`).
report: "workflow/report/workflow.rst"


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
        page=f"{RESULTS}/SUMMARY.html",
        charts=rules.render_charts.output,
        table=f"{RESULTS}/benchmarks.csv",


# The target of `snakemake --report <file> html_report`: what `report` makes, and the
# comparison and the pipeline reports where they exist. `make report` never runs it;
# running it would also bring an existing comparison or pipeline report up to date.
rule html_report:
    input:
        rules.report.input,
        comparison=existing_pages(["results/COMPARISON.html"]),
        pipelines=existing_pages(
            [f"{plan.root}/REPORT.html" for plan in PIPELINE_PLANS.values()]
        ),

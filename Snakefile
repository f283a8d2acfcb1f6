# localbench: how fast do local AI models really run on this machine?
#
#   snakemake --cores 1 report      fetch, warm up, benchmark, aggregate, summarise
#   snakemake --cores 1 pipelines   run the configured pipelines over inputs/ folders
#
# Rules are thin: the work is done by the `localbench` package in workflow/.
from snakemake.utils import min_version

min_version("9.0")


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

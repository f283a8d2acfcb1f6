# Aggregation with pandas, the charts (matplotlib) and the summary rendered through
# Jinja2, in Markdown and as the HTML page the report shows.
#
# Outputs marked report() are the HTML report's (`snakemake --report`); captions live in
# workflow/report/. Each file has one label at most beside the ones that differ per
# model: the report turns a further label with two values into a toggle between files.


rule aggregate_results:
    input:
        results=result_files(),
    output:
        report(
            f"{RESULTS}/benchmarks.csv",
            caption="../workflow/report/table.rst",
            category="1. Summary",
            labels={"content": "benchmarks.csv: every result as one table"},
        ),
    log:
        f"{RESULTS}/logs/aggregate_results.log",
    conda:
        "../envs/localbench.yaml"
    script:
        "../workflow/scripts/aggregate_results.py"


rule render_charts:
    input:
        results=result_files(),
    output:
        png=[
            report(
                f"{RESULTS}/charts/{name}.png",
                caption=f"../workflow/report/{lbcharts.caption_name(name)}.rst",
                category="2. Charts",
                labels={"chart": lbcharts.chart_title(name)},
            )
            for name in CHARTS
        ],
        svg=[f"{RESULTS}/charts/{name}.svg" for name in CHARTS],
    log:
        f"{RESULTS}/logs/render_charts.log",
    conda:
        "../envs/localbench.yaml"
    params:
        display_names=DISPLAY_NAMES,
        profile=PROFILE,
        # Sorted: reordering the config's models changes no chart.
        tasks=sorted({config["models"][name]["task"] for name in MODELS}),
    script:
        "../workflow/scripts/render_charts.py"


rule render_throughput_chart:
    input:
        throughput=throughput_files(),
    output:
        png=report(
            f"{RESULTS}/charts/{lbcharts.THROUGHPUT_CHART}.png",
            caption="../workflow/report/chart-throughput.rst",
            category="2. Charts",
            labels={"chart": lbcharts.chart_title(lbcharts.THROUGHPUT_CHART)},
        ),
        svg=f"{RESULTS}/charts/{lbcharts.THROUGHPUT_CHART}.svg",
    log:
        f"{RESULTS}/logs/render_throughput_chart.log",
    conda:
        "../envs/localbench.yaml"
    params:
        # The names of the models it draws only: another model's change redraws nothing.
        display_names={
            name: DISPLAY_NAMES[name]
            for name in MODELS
            if lbconfig.throughput_batch_sizes(config, name)
        },
        profile=PROFILE,
    script:
        "../workflow/scripts/render_throughput_chart.py"


rule render_summary:
    input:
        table=f"{RESULTS}/benchmarks.csv",
        results=result_files(),
        hardware=f"{RESULTS}/hardware.json",
        warmup=f"{RESULTS}/warmup.json",
        # The summary links the PNG charts; its HTML page embeds them.
        charts=rules.render_charts.output.png,
        # Records of peer engines run on this machine (benchmarks/llama_cpp_peer.py).
        peers=lbpeers.find_records(RESULTS),
        # Batched decoding, one file per model, backend and batch size, and its chart.
        throughput=throughput_files(),
        throughput_chart=(
            [rules.render_throughput_chart.output.png] if throughput_files() else []
        ),
    output:
        summary=f"{RESULTS}/SUMMARY.md",
        page=report(
            f"{RESULTS}/SUMMARY.html",
            caption="../workflow/report/summary.rst",
            category="1. Summary",
            labels={"content": "SUMMARY.html: the summary, its tables and charts"},
        ),
    log:
        f"{RESULTS}/logs/render_summary.log",
    conda:
        "../envs/localbench.yaml"
    params:
        display_names=DISPLAY_NAMES,
    script:
        "../workflow/scripts/render_summary.py"

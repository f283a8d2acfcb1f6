# Aggregation with pandas and the Markdown summary rendered through Jinja2.


rule aggregate_results:
    input:
        results=result_files(),
    output:
        f"{RESULTS}/benchmarks.csv",
    log:
        f"{RESULTS}/logs/aggregate_results.log",
    conda:
        "../envs/localbench.yaml"
    script:
        "../workflow/scripts/aggregate_results.py"


rule render_summary:
    input:
        table=f"{RESULTS}/benchmarks.csv",
        results=result_files(),
        hardware=f"{RESULTS}/hardware.json",
        warmup=f"{RESULTS}/warmup.json",
        # Records of peer engines run on this machine (benchmarks/llama_cpp_peer.py).
        peers=lbpeers.find_records(RESULTS),
        # Batched decoding, one file per model, backend and batch size.
        throughput=throughput_files(),
    output:
        summary=f"{RESULTS}/SUMMARY.md",
        chart=f"{RESULTS}/chart.svg",
    log:
        f"{RESULTS}/logs/render_summary.log",
    conda:
        "../envs/localbench.yaml"
    script:
        "../workflow/scripts/render_summary.py"

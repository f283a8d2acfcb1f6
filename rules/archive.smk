# Archives per hardware profile, and the comparison across profiles.


rule archive:
    input:
        summary=f"{RESULTS}/SUMMARY.md",
        table=f"{RESULTS}/benchmarks.csv",
        manifests=expand(f"{MODELS_ROOT}/{{model}}/manifest.json", model=MODELS),
    log:
        f"{RESULTS}/logs/archive.log",
    conda:
        "../envs/localbench.yaml"
    params:
        profile=PROFILE,
    script:
        "../workflow/scripts/archive_results.py"


rule render_comparison:
    input:
        tables=existing_tables(),
        results=existing_results(),
        archives=existing_archives(),
        seed=SEED_REPORT,
    output:
        # Kept, not deleted, before the job runs, and restored should it fail: an
        # earlier comparison is never lost.
        update("results/COMPARISON.md"),
        # The same as a page of the HTML report (`snakemake --report`).
        page=report(
            "results/COMPARISON.html",
            caption="../workflow/report/comparison.rst",
            category="5. Comparison",
            labels={"content": "COMPARISON.html: every profile side by side"},
        ),
        # Each model's speed on each machine, linked from COMPARISON.md.
        chart=report(
            "results/comparison.png",
            caption="../workflow/report/chart-comparison.rst",
            category="5. Comparison",
            labels={"content": "comparison.png: each model's speed on each machine"},
        ),
        chart_svg="results/comparison.svg",
    log:
        "results/logs/render_comparison.log",
    conda:
        "../envs/localbench.yaml"
    params:
        baseline=config["compare_baseline"],
    script:
        "../workflow/scripts/render_comparison.py"


rule compare:
    input:
        "results/COMPARISON.md",

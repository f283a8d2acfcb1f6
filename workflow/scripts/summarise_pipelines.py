"""Snakemake script: end the run with one line per pipeline (done, failed, report)."""

import json

lines = []
for path in snakemake.input.counts:  # noqa: F821 - injected by Snakemake
    with open(path, encoding="utf-8") as handle:
        lines.append(json.load(handle)["line"])
# Pipelines left out at parse time (a stage's model is not configured, or planning
# failed): the `pipelines` target passes them all, a pipeline's own target its own.
lines.extend(getattr(snakemake.params, "not_run", []))  # noqa: F821
text = "\n".join(lines) if lines else "no pipelines are configured (config.yaml: pipelines)"
print(text)
with open(snakemake.log[0], "w", encoding="utf-8") as handle:  # noqa: F821
    handle.write(text + "\n")

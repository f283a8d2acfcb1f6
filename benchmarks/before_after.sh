#!/bin/sh
# Before/after check of a change to the measured path, on one machine in one call:
# the same overlay run by an earlier commit's tree and by this checkout, one after the
# other, sharing the model folder (built once). Prints each run's headline figures.
#
#   git archive <before-commit> | gzip > .whl/before.tgz     (here; .whl is carried)
#   sh benchmarks/before_after.sh .whl/before.tgz benchmarks/engine-check.yaml [key=value ...]
#
# Extra words go to --config (e.g. size=tiny device=cpu for a trial run). TARGETS (default
# report) names what to build, with {profile} for the side's results folder; LIMIT and
# LIMIT_AFTER cap each side's seconds (the first side also builds the checkpoints).
#
# On the GPU machine the carried wheels are installed first (see docs/benchmarks pages).
set -eu
archive=$1
overlay=$2
shift 2
here=$(pwd)
before=/tmp/localbench-before
rm -rf "$before" && mkdir -p "$before" && tar xzf "$archive" -C "$before"
mkdir -p models && ln -sfn "$here/models" "$before/models"
run() {
    tree=$1
    side=$2
    shift 2
    limit=${LIMIT:-400}
    [ "$side" = after ] && limit=${LIMIT_AFTER:-$limit}
    targets=$(echo "${TARGETS:-report}" | sed "s/{profile}/$side/g")
    # shellcheck disable=SC2086 # targets are words
    (cd "$tree" && timeout -s INT "$limit" python3 -m snakemake --cores 1 --keep-going \
        $targets --configfile config.yaml "$here/$overlay" --config weights=synthetic profile="$side" "$@" \
        >"$here/results-$side.log" 2>&1) || echo "$side: snakemake exited $?"
}
run "$before" before "$@"
run "$here" after "$@"
for side in before after; do
    root=$here/results/$side
    [ "$side" = before ] && root=$before/results/$side
    echo "== $side"
    python3 - "$root" <<'PY'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
for path in sorted(root.glob("**/*.json")):
    record = json.loads(path.read_text())
    metrics = record.get("metrics") if isinstance(record, dict) else None
    if not metrics:
        continue
    def median(key):
        return (metrics.get(key) or {}).get("median")
    print(path.relative_to(root), record.get("status"),
          "decode", median("decode_tokens_per_s"), "ttft_ms", median("ttft_ms"),
          "aggregate", median("aggregate_tokens_per_s"))
PY
    [ "$side" = before ] && cp -r "$before/results/before" "$here/results/before" 2>/dev/null || true
done

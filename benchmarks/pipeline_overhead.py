"""Pipelines' fixed costs and batching on this machine: issue 16's CPU targets.

    python benchmarks/pipeline_overhead.py --voice 100 --texts 16

1. writes ``--voice`` voice notes into inputs/cpu-voice and ``--texts`` text files (the
   notes' spoken sentences) into inputs/cpu-texts (benchmarks/pipeline_files.py);
2. per pipeline of ``benchmarks/cpu-pipelines.yaml``: deletes its results and times
   ``python -m snakemake --cores 1 <pipeline> --configfile config.yaml <overlay>``;
3. from the batch records, per pipeline: jobs, files done, the loads, the summed
   inference seconds, files/s over them, and the whole run against one load per stage
   plus pure inference (``overhead``);
4. compares the outputs of summaries-batched and summaries-one-at-a-time file by file.

Prints a table and writes JSON (``--out``). Model checkpoints are built first where
missing (the fetch rule, ``--config weights=synthetic`` by default). A benchmark, not a
test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = "benchmarks/cpu-pipelines.yaml"
PIPELINES = [
    "voice-transcripts",
    "voice-transcripts-one-job",
    "summaries-batched",
    "summaries-one-at-a-time",
]


def snakemake(args, *targets: str, log: Path) -> float:
    command = [
        args.python, "-m", "snakemake", "--cores", "1", *targets,
        "--configfile", "config.yaml", OVERLAY, "--config", *args.config,
    ]  # fmt: skip
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} exited {done.returncode}; see {log}")
    return seconds


def records(name: str) -> list[dict]:
    paths = sorted(glob.glob(str(ROOT / f"results/*/pipelines/{name}/batches/*/*.json")))
    return [json.loads(Path(p).read_text()) for p in paths]


def summarise(name: str, wall_s: float) -> dict:
    batches = records(name)
    stages: dict[str, list[dict]] = {}
    for batch in batches:
        stages.setdefault(batch["stage"], []).append(batch)
    one_load_each = sum(statistics.median(b["load_s"] for b in group) for group in stages.values())
    inference_s = sum(b["inference_s"] for b in batches)
    done = sum(1 for b in batches for f in b["files"] if f["status"] == "done")
    files = sum(len(b["files"]) for b in batches)
    floor = one_load_each + inference_s
    return {
        "pipeline": name,
        "wall_s": round(wall_s, 2),
        "jobs": len(batches),
        "files": files,
        "done": done,
        "loads_s": [round(b["load_s"], 2) for b in batches],
        "imports_s": [round((b.get("startup") or {}).get("imports_s") or 0, 2) for b in batches],
        "inference_s": round(inference_s, 2),
        "one_load_per_stage_plus_inference_s": round(floor, 2),
        "overhead": round(wall_s / floor, 3) if floor else None,
        "files_per_s": round(done / inference_s, 4) if inference_s else None,
        "decode_batch": sorted({f.get("decode_batch") for b in batches for f in b["files"]}),
        "backend": sorted({str(b.get("backend")) for b in batches}),
    }


def outputs(name: str) -> dict[str, str]:
    found = glob.glob(str(ROOT / f"results/*/pipelines/{name}/summaries/*"))
    return {Path(p).name: Path(p).read_text() for p in found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", type=int, default=100, help="voice notes (100)")
    parser.add_argument("--texts", type=int, default=16, help="text files to summarise (16)")
    parser.add_argument("--pipelines", nargs="+", default=PIPELINES)
    parser.add_argument("--config", nargs="+", default=["weights=synthetic"])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pipeline-overhead"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/pipeline-overhead/summary.json"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    voice, texts = ROOT / "inputs/cpu-voice", ROOT / "inputs/cpu-texts"
    for folder in (voice, texts):
        shutil.rmtree(folder, ignore_errors=True)
    spoken = args.work / "spoken.json"
    subprocess.run(
        [args.python, "benchmarks/pipeline_files.py", "--audio", str(voice),
         "--count", str(max(args.voice, args.texts)), "--texts", str(spoken)],
        cwd=ROOT, check=True,
    )  # fmt: skip
    sentences = json.loads(spoken.read_text())
    texts.mkdir(parents=True)
    for index, text in enumerate(list(sentences.values())[: args.texts], 1):
        (texts / f"note-{index:03d}.txt").write_text(text + "\n")
    for extra in sorted(voice.glob("*"))[args.voice :]:
        extra.unlink()
    models = ["models/whisper-base/manifest.json", "models/qwen2.5-1.5b-instruct/manifest.json"]
    snakemake(args, *models, log=args.work / "checkpoints.log")
    summary = []
    for name in args.pipelines:
        for path in glob.glob(str(ROOT / f"results/*/pipelines/{name}")):
            shutil.rmtree(path)
        wall = snakemake(args, name, log=args.work / f"{name}.log")
        summary.append(summarise(name, wall))
        print(json.dumps(summary[-1]), flush=True)
    result = {"pipelines": summary, "config": args.config}
    batched, single = outputs("summaries-batched"), outputs("summaries-one-at-a-time")
    if batched and single:
        same = sorted(n for n in batched if batched[n] == single.get(n))
        result["summaries_same_output"] = {"same": len(same), "of": len(batched)}
        # From the records on disk: either pipeline may come from an earlier invocation.
        rates = {
            name: summarise(name, 0.0)["files_per_s"]
            for name in ("summaries-batched", "summaries-one-at-a-time")
        }
        if all(rates.values()):
            result["files_per_s"] = rates
            result["batched_speedup"] = round(
                rates["summaries-batched"] / rates["summaries-one-at-a-time"], 3
            )
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "pipelines"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

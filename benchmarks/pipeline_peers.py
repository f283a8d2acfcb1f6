"""The transformers peer of our pipelines: what a user writes instead, timed.

    python benchmarks/pipeline_peers.py --pipelines voice-notes photo-stories \
        --out peers.json [--outputs peer-outputs] [--batch-size 16] [--device cuda] \
        [--configfile extra.yaml] [--config size=tiny weights=synthetic]

Runs each pipeline of config.yaml (``pipelines:``) over the same input folders with the
same checkpoints (``models/<model>/``, ``models/_tiny/<model>/`` for ``size: tiny``: where
the fetch rule puts them) through ``transformers.pipeline``: "automatic-speech-recognition"
for Whisper, "image-text-to-text" for BLIP ("image-to-text" is gone in transformers 5;
BLIP is given an empty prompt, its plain caption), "text-generation" for the language
model, each with ``batch_size``, greedy, the stage's ``max_new_tokens``, the stage's
prompt through the tokenizer's chat template where it has one (as our text stage does),
left padding. Audio is read with soundfile (transformers reads a path only through an
ffmpeg binary); images are given as paths. Never ``trust_remote_code``.

Each stage writes one output per file (``<outputs>/<pipeline>/<stage>/<file>.<ext>``,
like ours) and the JSON at ``--out`` holds the times: process start to imports done,
each model's load, each stage's inference (files read included) and files/s, each
pipeline's and the whole run's seconds, with the versions, device, batch size and the
file counts. The config is read like the Snakefile reads it: config.yaml, then each
``--configfile`` merged over it, then ``--config key=value`` (YAML values).
"""

from __future__ import annotations

import time

STARTED = time.time()  # the fallback for the process's start


def process_start() -> float:
    """When this process started (psutil reads /proc), else when this module began."""
    try:
        import psutil

        return min(psutil.Process().create_time(), STARTED)
    except Exception:  # noqa: BLE001 - any failure: this module's own start
        return STARTED


import argparse  # noqa: E402 - the clock above starts first
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import yaml  # noqa: E402
from transformers import pipeline  # noqa: E402

IMPORTS_DONE = time.time()

# As the project's pipelines (localbench.pipelines.plan), repeated here so that this
# script reads nothing of the library: what each first stage reads, and the token
# budget of a stage that sets none.
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
TEXT_EXTENSIONS = (".txt", ".md")
INPUT_EXTENSIONS = {
    "speech-recognition": AUDIO_EXTENSIONS,
    "image-captioning": IMAGE_EXTENSIONS,
    "text-generation": TEXT_EXTENSIONS,
}
DEFAULT_MAX_NEW_TOKENS = {"speech-recognition": 128, "image-captioning": 30, "text-generation": 96}
PIPELINE_TASKS = {
    "speech-recognition": "automatic-speech-recognition",
    "image-captioning": "image-text-to-text",
    "text-generation": "text-generation",
}
WHISPER_RATE = 16_000
WHISPER_WINDOW_S = 30


def merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``, dicts merged key by key (Snakemake's --configfile)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def read_config(configfiles: list[Path], overrides: list[str]) -> dict:
    config = yaml.safe_load(Path("config.yaml").read_text())
    for path in configfiles:
        merge(config, yaml.safe_load(path.read_text()) or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--config {item!r}: expected key=value")
        config[key] = yaml.safe_load(value)
    return config


def models_root(config: dict) -> Path:
    """Where the fetch rule puts the checkpoints (rules/common.smk, MODELS_ROOT)."""
    return Path("models/_tiny") if config.get("size") == "tiny" else Path("models")


def pipeline_stages(config: dict, name: str) -> tuple[Path, list[dict]]:
    spec = (config.get("pipelines") or {}).get(name)
    if spec is None:
        raise SystemExit(f"{name}: no such pipeline in the config")
    stages = []
    for stage in spec["stages"]:
        model = stage["model"]
        task = config["models"][model]["task"]
        if task not in PIPELINE_TASKS:
            raise SystemExit(f"{name}: stage {stage['name']}: task {task} has no peer here")
        stages.append(
            {
                "name": stage["name"],
                "model": model,
                "task": task,
                "checkpoint": str(models_root(config) / model),
                "max_new_tokens": stage.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS[task]),
                "prompt": stage.get("prompt"),
                "extension": stage.get("extension", "txt"),
            }
        )
    return Path(spec["inputs"]), stages


def input_files(folder: Path, task: str) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in INPUT_EXTENSIONS[task]
    )


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def read_audio(path: Path) -> dict:
    """Mono float32 samples and their rate, as the ASR pipeline takes them (it resamples)."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return {"raw": np.ascontiguousarray(samples.mean(axis=1)), "sampling_rate": int(rate)}


def build_prompt(template: str, previous: str, file_name: str) -> str:
    """The stage's prompt as our text stage fills it: ``{file}``, then ``{previous}``."""
    return template.replace("{file}", file_name).replace("{previous}", previous)


def _greedy() -> dict:
    # do_sample=False with the checkpoint's sampling settings cleared, so generate()
    # neither warns about them nor applies them.
    return {"do_sample": False, "num_beams": 1, "temperature": None, "top_p": None, "top_k": None}


def run_stage(stage: dict, sources: list, names: list[str], args, device: str, dtype) -> tuple:
    """Load the stage's pipeline, run it over ``sources``; the texts and the timings."""
    task = stage["task"]
    kwargs = {"model": stage["checkpoint"], "device": device, "dtype": dtype}
    kwargs["batch_size"] = args.batch_size
    synchronize(device)
    start = time.perf_counter()
    pipe = pipeline(PIPELINE_TASKS[task], trust_remote_code=False, **kwargs)
    synchronize(device)
    load_s = time.perf_counter() - start
    budget = stage["max_new_tokens"]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if task == "speech-recognition":
        audio = [read_audio(path) for path in sources]
        config = pipe.model.generation_config
        generate = {"max_new_tokens": budget, **_greedy()}
        if getattr(config, "is_multilingual", False):
            generate.update(language="en", task="transcribe")
        limit = getattr(pipe.model.config, "max_target_positions", None)
        if limit:  # room for the decoder prompt (tiny models have few positions)
            generate["max_new_tokens"] = min(budget, limit - 4)
        longest = max(len(a["raw"]) / a["sampling_rate"] for a in audio)
        chunks = {"chunk_length_s": WHISPER_WINDOW_S} if longest > WHISPER_WINDOW_S else {}
        results = pipe(audio, generate_kwargs=generate, **chunks)
        texts = [result["text"].strip() for result in results]
    elif task == "image-captioning":
        paths = [str(path) for path in sources]
        results = pipe(
            images=paths,
            text=[""] * len(paths),
            max_new_tokens=budget,
            generate_kwargs=_greedy(),
            return_full_text=False,
        )
        texts = [_first(result)["generated_text"].strip() for result in results]
    else:
        tokenizer = pipe.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        prompts = [
            build_prompt(stage["prompt"], Path(source).read_text(), name)
            for source, name in zip(sources, names, strict=True)
        ]
        if getattr(tokenizer, "chat_template", None):
            prompts = [[{"role": "user", "content": prompt}] for prompt in prompts]
        results = pipe(prompts, max_new_tokens=budget, return_full_text=False, **_greedy())
        texts = [_first(result)["generated_text"].strip() for result in results]
    synchronize(device)
    inference_s = time.perf_counter() - start
    record = {
        "stage": stage["name"],
        "model": stage["model"],
        "checkpoint": stage["checkpoint"],
        "task": task,
        "transformers_pipeline": PIPELINE_TASKS[task],
        "pipeline_class": type(pipe).__name__,
        "max_new_tokens": budget,
        "files": len(texts),
        "load_s": round(load_s, 4),
        "inference_s": round(inference_s, 4),
        "files_per_s": round(len(texts) / inference_s, 3) if inference_s > 0 else None,
    }
    if device.startswith("cuda"):
        record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    del pipe
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return texts, record


def _first(result):
    """One answer of a pipeline that may wrap each input's answers in a list."""
    return result[0] if isinstance(result, list) else result


def count_outputs(root: Path, config: dict, names: list[str]) -> dict:
    """Per pipeline and stage: the output files under ``root/<pipeline>/<stage>/``, their
    characters and their tokens (the stage tokenizer's count of each text, no special
    tokens). Random weights stop at random: this says how much text each side made."""
    from transformers import AutoTokenizer

    counts = {}
    for name in names:
        counts[name] = {}
        for stage in pipeline_stages(config, name)[1]:
            folder = root / name / stage["name"]
            paths = sorted(folder.glob(f"*.{stage['extension']}")) if folder.is_dir() else []
            texts = [path.read_text().strip() for path in paths]
            tokenizer = AutoTokenizer.from_pretrained(stage["checkpoint"])
            tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
            counts[name][stage["name"]] = {
                "files": len(texts),
                "chars": sum(len(t) for t in texts),
                "tokens": tokens,
            }
    return counts


def run_pipeline(name: str, config: dict, args, device: str, dtype) -> dict:
    start = time.perf_counter()
    folder, stages = pipeline_stages(config, name)
    files = input_files(folder, stages[0]["task"])
    if not files:
        raise SystemExit(f"{name}: no input files in {folder}/")
    names = [path.name for path in files]
    sources: list = files
    records = []
    for stage in stages:
        texts, record = run_stage(stage, sources, names, args, device, dtype)
        out = args.outputs / name / stage["name"]
        out.mkdir(parents=True, exist_ok=True)
        sources = []
        for file_name, text in zip(names, texts, strict=True):
            path = out / f"{file_name}.{stage['extension']}"
            path.write_text(text + "\n")
            sources.append(path)
        records.append(record)
        print(
            f"{name}/{stage['name']}: {record['files']} files, load {record['load_s']:.2f} s, "
            f"inference {record['inference_s']:.2f} s, {record['files_per_s']} files/s",
            flush=True,
        )
    return {
        "inputs": str(folder),
        "files": len(files),
        "stages": records,
        "load_s": round(sum(r["load_s"] for r in records), 4),
        "inference_s": round(sum(r["inference_s"] for r in records), 4),
        "total_s": round(time.perf_counter() - start, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", nargs="+", default=["voice-notes", "photo-stories"])
    parser.add_argument("--out", type=Path, help="the timing JSON (required to run)")
    parser.add_argument(
        "--outputs", type=Path, help="the peer's outputs (default: an outputs/ folder beside --out)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="16: our default batch")
    parser.add_argument("--device", default=None, help="auto, cuda or cpu (config's device)")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, else float32")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[])
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--count-tokens",
        type=Path,
        metavar="ROOT",
        help="print the files, characters and tokens of the outputs under ROOT/<pipeline>/"
        "<stage>/ (e.g. results/<profile>/pipelines) as JSON and stop",
    )
    parser.add_argument(
        "--print-manifests",
        action="store_true",
        help="print the manifest path of each stage's checkpoint and stop (what to fetch)",
    )
    args = parser.parse_args(argv)
    config = read_config(args.configfile, args.config)
    if args.print_manifests:
        models = {s["checkpoint"] for p in args.pipelines for s in pipeline_stages(config, p)[1]}
        print(" ".join(f"{model}/manifest.json" for model in sorted(models)))
        return 0
    if args.count_tokens:
        print(json.dumps(count_outputs(args.count_tokens, config, args.pipelines), indent=1))
        return 0
    if args.out is None:
        parser.error("--out is required")
    args.outputs = args.outputs or args.out.parent / "outputs"
    device = args.device or str(config.get("device", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    started = process_start()
    report = {
        "peer": "transformers.pipeline",
        "started_unix": round(started, 3),
        "imports_s": round(IMPORTS_DONE - started, 4),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.version.cuda,
        },
        "device": device,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": args.batch_size,
        "config": {key: config.get(key) for key in ("size", "weights")},
        "pipelines": {},
    }
    for name in args.pipelines:
        report["pipelines"][name] = run_pipeline(name, config, args, device, dtype)
    report["files"] = {name: p["files"] for name, p in report["pipelines"].items()}
    report["end_to_end_s"] = round(time.time() - started, 4)
    # Counted after the clock stopped.
    counts = count_outputs(args.outputs, config, args.pipelines)
    for name, pipeline_counts in counts.items():
        for record in report["pipelines"][name]["stages"]:
            record["output"] = pipeline_counts[record["stage"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    seconds = f"imports {report['imports_s']:.2f} s, end to end {report['end_to_end_s']:.2f} s"
    print(f"{seconds}: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

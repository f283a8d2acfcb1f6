"""A peer on the same CPU: llama.cpp's own benchmark over the same checkpoint.

    python benchmarks/llama_cpp_peer.py models/qwen2.5-1.5b-instruct \
        --output results/<profile>/peers/llama.cpp/qwen2.5-1.5b-instruct.json

Builds llama.cpp's CPU tools (llama-bench, llama-quantize) from the source package of
llama-cpp-python on PyPI (its vendor/llama.cpp), converts the checkpoint to GGUF with
that tree's own converter (BF16, then Q8_0 and Q4_K_M with llama-quantize), and runs
llama-bench with the same threads, prompt length and new-token count as our benchmark.
Everything it builds lives under --work (git-ignored). Not part of `make test`: the build
takes minutes. Where a step cannot run, the output says which and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

from localbench.atomic import write_json  # noqa: E402 - after the path above
from localbench.config import resolve_threads  # noqa: E402
from localbench.results import now_utc  # noqa: E402

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SIMPLE_INDEX = "https://pypi.org/simple"
# GGUF weight types, as llama-quantize names them; BF16 is the converter's own output.
WEIGHT_TYPES = ("BF16", "Q8_0", "Q4_K_M")
# llama.cpp's native x86 build crashes in its AMX code on every quantized type on this
# project's CPU machine (an open upstream issue); the build keeps AVX-512 and drops AMX.
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# The converter names a BPE pre-tokenizer by hashing what the tokenizer makes of a test
# text; a synthetic checkpoint's tokenizer is not among the known hashes, so the family's
# own pre-tokenizer is named instead (the weights are converted unchanged).
PRE_TOKENIZER = {"qwen2": "qwen2", "llama": "llama-bpe"}


def run(command: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def fetch_source(work: Path) -> Path:
    """The llama.cpp tree of the llama-cpp-python source package, downloaded once and
    checked against the index's sha256."""
    tree = work / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    if tree.is_dir():
        return tree
    name = f"llama_cpp_python-{VERSION}.tar.gz"
    request = urllib.request.Request(
        f"{SIMPLE_INDEX}/{PACKAGE}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        files = json.load(answer)["files"]
    entry = next(f for f in files if f["filename"] == name)
    archive = work / name
    with urllib.request.urlopen(entry["url"], timeout=600) as answer:
        archive.write_bytes(answer.read())
    if hashlib.sha256(archive.read_bytes()).hexdigest() != entry["hashes"]["sha256"]:
        raise RuntimeError(f"{name}: sha256 differs from the index's")
    with tarfile.open(archive) as bundle:
        bundle.extractall(work, filter="data")
    return tree


def build_tools(tree: Path, work: Path) -> tuple[Path, list[str]]:
    """llama-bench and llama-quantize, CPU only, native instructions without AMX."""
    build = work / "build"
    flags = NO_AMX_FLAGS if platform.machine() in ("x86_64", "AMD64") else ""
    options = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_NATIVE=ON",
        "-DLLAMA_CURL=OFF",
        "-DBUILD_SHARED_LIBS=OFF",
        f"-DCMAKE_C_FLAGS={flags}",
        f"-DCMAKE_CXX_FLAGS={flags}",
    ]
    if not (build / "bin" / "llama-bench").exists():
        run(["cmake", "-S", str(tree), "-B", str(build), *options])
        run(["cmake", "--build", str(build), "-j", "--target", "llama-bench", "llama-quantize"])
    return build / "bin", options


def convert(tree: Path, model_dir: Path, out: Path, work: Path) -> None:
    """The checkpoint as a BF16 GGUF file, by the tree's own converter.

    The converter imports sentencepiece, which this project does not need: it is
    installed into a folder under ``work`` for the converter alone."""
    packages = work / "converter-packages"
    if not (packages / "sentencepiece").is_dir():
        run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(packages),
             "sentencepiece"])  # fmt: skip
    model_type = json.loads((model_dir / "config.json").read_text())["model_type"]
    wrapper = f"""
import sys
sys.path[:0] = [{str(tree)!r}, {str(tree / "gguf-py")!r}, {str(packages)!r}]
import conversion.base as base
import convert_hf_to_gguf as converter
fallback = {PRE_TOKENIZER.get(model_type)!r}
known = base.TextModel.get_vocab_base_pre
def named(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        if fallback is None:
            raise
        return fallback
base.TextModel.get_vocab_base_pre = named
sys.argv = ["convert_hf_to_gguf.py", {str(model_dir)!r}, "--outtype", "bf16",
            "--outfile", {str(out)!r}]
converter.main()
"""
    run([sys.executable, "-c", wrapper])


def bench(bin_dir: Path, gguf: Path, args) -> dict:
    """llama-bench's JSON record for prompt processing and generation."""
    command = [
        str(bin_dir / "llama-bench"), "-m", str(gguf), "-p", str(args.prompt_tokens),
        "-n", str(args.new_tokens), "-t", str(args.threads), "-r", str(args.repetitions),
        "-o", "json",
    ]  # fmt: skip
    print("+", " ".join(command), flush=True)
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a checkpoint folder under models/")
    parser.add_argument("--output", type=Path, required=True, help="JSON record to write")
    parser.add_argument("--work", type=Path, default=ROOT / ".gl", help="build folder")
    parser.add_argument("--threads", default="auto", help="CPU threads (auto: physical cores)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument(
        "--types",
        nargs="+",
        choices=WEIGHT_TYPES,
        default=list(WEIGHT_TYPES),
        help="GGUF weight types to measure (the quantized ones are made from BF16)",
    )
    args = parser.parse_args()
    args.threads = resolve_threads(args.threads if args.threads == "auto" else int(args.threads))
    args.work.mkdir(parents=True, exist_ok=True)

    record = {
        "engine": "llama.cpp",
        "peer": True,
        "source": f"{PACKAGE} {VERSION} source package, vendor/llama.cpp",
        "model": args.model_dir.name,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "repetitions": args.repetitions,
        "measured_at": now_utc(),
        "rows": [],
    }
    try:
        tree = fetch_source(args.work)
        bin_dir, record["build_options"] = build_tools(tree, args.work)
    except Exception as error:  # noqa: BLE001 - the record says why there is no peer
        record["status"] = "not built"
        record["reason"] = f"{type(error).__name__}: {error}"
        write_json(args.output, record)
        sys.exit(f"llama.cpp peer not built: {record['reason']}")

    models = args.work / "gguf" / args.model_dir.name
    models.mkdir(parents=True, exist_ok=True)
    for weight_type in args.types:
        gguf = models / f"{weight_type.lower()}.gguf"
        try:
            if not gguf.exists():
                if weight_type == "BF16":
                    convert(tree, args.model_dir, gguf, args.work)
                else:
                    source = models / "bf16.gguf"
                    if not source.exists():
                        convert(tree, args.model_dir, source, args.work)
                    run([str(bin_dir / "llama-quantize"), str(source), str(gguf), weight_type])
            runs = bench(bin_dir, gguf, args)
        except Exception as error:  # noqa: BLE001 - one weight type's failure is its row
            record["rows"].append(
                {"weights": weight_type, "status": "failed", "reason": str(error)}
            )
            continue
        row = {"weights": weight_type, "status": "measured", "file_bytes": gguf.stat().st_size}
        for entry in runs:
            kind = "prompt" if entry["n_prompt"] and not entry["n_gen"] else "decode"
            row[f"{kind}_tokens_per_s"] = {
                "mean": entry["avg_ts"],
                "stddev": entry["stddev_ts"],
                "samples": entry.get("samples_ts"),
            }
            record["build_commit"] = entry.get("build_commit")
            record["build_number"] = entry.get("build_number")
            record["cpu_info"] = entry.get("cpu_info")
            row["n_threads"] = entry.get("n_threads")
        record["rows"].append(row)
    record["status"] = "measured"
    write_json(args.output, record)
    for row in record["rows"]:
        if row["status"] == "measured":
            print(
                f"{row['weights']:7} decode {row['decode_tokens_per_s']['mean']:7.2f} tok/s, "
                f"prompt {row['prompt_tokens_per_s']['mean']:8.1f} tok/s, "
                f"{row['file_bytes'] / 1e9:.2f} GB"
            )
        else:
            print(f"{row['weights']:7} failed: {row['reason']}")


if __name__ == "__main__":
    main()

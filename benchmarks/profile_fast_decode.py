"""Time the fast decoder on a full-size architecture built straight on the GPU.

A diagnostic, not the benchmark (that is the pipeline with benchmarks/fast-backend.yaml):
the model is the real architecture with random weights initialised on the device, so it
starts in seconds; it prints the decode rate, the time to first token and the CUDA
kernels that take the decode step's time.

    python benchmarks/profile_fast_decode.py Qwen/Qwen2.5-1.5B-Instruct --kernels \
        --variant kernels --variant attention
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

from localbench.engine.backends import decode_attention, gemv  # noqa: E402
from localbench.engine.backends.fast import FastDecoder  # noqa: E402
from localbench.fetch.architectures import model_class, transformers_config  # noqa: E402
from localbench.fetch.reference import load_architecture  # noqa: E402

# name: (attention kernel, matrix-vector kernels, what it is)
VARIANTS = {
    "kernels": (True, True, "Triton attention and matrix-vector kernels (the default)"),
    "attention": (True, False, "Triton attention, compiled PyTorch projections"),
    "pytorch": (False, False, "compiled PyTorch throughout"),
}


def build_on_device(repo: str, dtype=torch.bfloat16, device="cuda"):
    """The full-size model of ``repo`` with random weights, initialised on ``device``."""
    config = load_architecture(repo)["config"]
    with torch.device(device):
        model = model_class(config)._from_config(transformers_config(config), dtype=dtype)
    return model.eval()


def time_decoder(decoder, prompt_tokens: int, new_tokens: int, runs: int) -> dict:
    """Median decode rate and time to first token over ``runs`` after one warm-up."""
    vocab = decoder.embed.weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=generator)
    prompt = prompt.to(decoder.device)
    start = time.perf_counter()
    decoder.generate(prompt, new_tokens)
    setup_s = time.perf_counter() - start
    rates, ttfts = [], []
    for _ in range(runs):
        run = decoder.generate(prompt, new_tokens)
        tokens = run.tokens
        rates.append((new_tokens - 1) / (run.end - run.first_token))
        ttfts.append((run.first_token - run.start) * 1e3)
    return {
        "decode_tokens_per_s": statistics.median(rates),
        "ttft_ms": statistics.median(ttfts),
        "first_call_s": setup_s,
        "compiled": decoder.use_compile,
        "compile_error": decoder.compile_error,
        "tokens": tokens,
    }


def kernel_table(decoder, steps: int = 20, rows: int = 25) -> str:
    """The CUDA kernels of ``steps`` decode-step graph replays, by total device time."""
    from torch.profiler import ProfilerActivity, profile

    decoder.position.fill_(decoder.max_len - steps - 1)  # room for every replayed step
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            decoder.graph.replay()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kernels", action="store_true", help="print the kernel table")
    parser.add_argument(
        "--variant",
        choices=list(VARIANTS),
        action="append",
        help="the decode step's kernels, one run each (default: kernels): "
        + "; ".join(f"{name}: {text}" for name, (_, _, text) in VARIANTS.items()),
    )
    parser.add_argument(
        "--tuned", type=Path, help="tilings for the matrix-vector kernel (tune_gemv.py --tuned)"
    )
    args = parser.parse_args()
    if args.tuned:
        for entry in json.loads(args.tuned.read_text()):
            gemv.TUNED[tuple(entry["weight"])] = gemv.Blocks(**entry["tiling"])
    model = build_on_device(args.repo)
    max_len = args.prompt_tokens + args.new_tokens
    print(json.dumps({"repo": args.repo, **check_kernel(model, max_len)}), flush=True)
    first_tokens = None
    for variant in args.variant or ["kernels"]:
        attention, linear, _ = VARIANTS[variant]
        decoder = FastDecoder(
            model, max_len=max_len, attention_kernel=attention, linear_kernels=linear
        )
        result = time_decoder(decoder, args.prompt_tokens, args.new_tokens, args.runs)
        tokens = result.pop("tokens")
        first_tokens = first_tokens or tokens
        pairs = enumerate(zip(tokens, first_tokens, strict=True))
        prefix = next((i for i, (a, b) in pairs if a != b), len(tokens))
        result["tokens_equal_to_first_variant"] = f"first {prefix} of {len(tokens)}"
        print(json.dumps({"repo": args.repo, "variant": variant, **result}), flush=True)
        if args.kernels and decoder.graph is not None:
            print(kernel_table(decoder), flush=True)
        del decoder
        torch.cuda.empty_cache()


def check_kernel(model, max_len: int) -> dict:
    """The decode-attention kernel against its PyTorch definition at this model's shapes,
    in the model's dtype (bf16), at a few positions: the largest difference."""
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    generator = torch.Generator(device="cuda").manual_seed(0)
    worst = 0.0
    for position in (0, 1, 64, 200, max_len - 1):

        def rand(*shape):
            return torch.randn(*shape, device="cuda", generator=generator).to(torch.bfloat16)

        angles = torch.rand(max_len, dim // 2, device="cuda", generator=generator) * 6.3
        cos = torch.cat([angles.cos()] * 2, -1).to(torch.bfloat16)
        sin = torch.cat([angles.sin()] * 2, -1).to(torch.bfloat16)
        qkv = rand((heads + 2 * kv_heads) * dim)
        bias = rand(qkv.numel()) if getattr(config, "model_type", "") == "qwen2" else None
        keys, values = rand(1, kv_heads, max_len, dim), rand(1, kv_heads, max_len, dim)
        at = torch.tensor([position], device="cuda")
        reference = decode_attention.reference_decode_attention(
            qkv, bias, cos, sin, at, keys.clone(), values.clone(), dim**-0.5
        )
        out = decode_attention.decode_attention(qkv, bias, cos, sin, at, keys, values, dim**-0.5)
        worst = max(worst, (out.float() - reference.float()).abs().max().item())
    return {"kernel_max_abs_difference_bf16": worst}


if __name__ == "__main__":
    main()

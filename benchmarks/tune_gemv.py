"""Time the matrix-vector kernel alone on a GPU at the seed models' decode-step shapes.

A diagnostic for choosing ``gemv.blocks``: for each projection of Qwen2.5-1.5B and
Llama-3.2-3B (with the norm, gate or residual the decoder folds into it) it times block
shapes, warps and pipeline stages, and beside them the PyTorch operations the kernel
replaces (cuBLAS's product alone, and with its norm, gate or residual as separate
kernels). Weights are cycled through enough copies that none is read from the L2 cache,
as in a decode step, where every layer has its own.

    python benchmarks/tune_gemv.py --tuned tuned.json > tune.jsonl

``profile_fast_decode.py --tuned tuned.json`` then runs the decoder with those tilings;
the ones that hold up go into ``gemv.TUNED``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

from localbench.engine.backends import gemv  # noqa: E402
from localbench.fetch.reference import load_architecture  # noqa: E402

REPOS = {
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
}


def decode_products(repo: str) -> dict[str, tuple[int, int, bool, bool, bool]]:
    """The decode step's products of ``repo``'s architecture, as the fast decoder runs
    them: name -> (weight rows, inputs, normalised input, gated, residual)."""
    config = load_architecture(repo)["config"]
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    q_size, kv_size = heads * head_dim, config["num_key_value_heads"] * head_dim
    intermediate = config["intermediate_size"]
    return {
        "qkv": (q_size + 2 * kv_size, hidden, True, False, False),
        "o": (hidden, q_size, False, False, True),
        "gate_up": (2 * intermediate, hidden, True, True, False),
        "down": (hidden, intermediate, False, False, True),
        "lm_head": (config["vocab_size"], hidden, True, False, False),
    }


L2_FLUSH_BYTES = 512 * 2**20  # several times the L2 cache: no copy is read from it


def time_us(calls) -> float:
    """Mean device time of one call, the ``calls`` replayed from a CUDA graph."""
    for call in calls[:3]:
        call()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (5 * len(calls))


TILES = ((1, 1024), (2, 512), (4, 256), (4, 512), (4, 1024), (8, 256), (8, 512))


def tune(model: str, name: str, rows: int, inputs: int, norm: bool, gated: bool, add: bool):
    """Print the times of this product's candidates; return the fastest tiling."""
    dtype, device = torch.bfloat16, "cuda"
    copies = max(2, L2_FLUSH_BYTES // (rows * inputs * 2))
    weights = [torch.randn(rows, inputs, device=device, dtype=dtype) * inputs**-0.5]
    weights += [torch.empty_like(weights[0]).copy_(weights[0]) for _ in range(copies - 1)]
    x = torch.randn(inputs, device=device, dtype=dtype)
    norm_weight = torch.rand(inputs, device=device, dtype=dtype) + 0.5 if norm else None
    outputs = rows // 2 if gated else rows
    residual = torch.randn(outputs, device=device, dtype=dtype) if add else None
    out = torch.empty(outputs, device=device, dtype=dtype)
    args = {"norm_weight": norm_weight, "eps": 1e-6, "gated": gated, "residual": residual}
    reference = gemv.reference_gemv(x, weights[0], **args)
    row = {"model": model, "projection": name, "rows": rows, "inputs": inputs, "copies": copies}
    gigabytes = rows * inputs * 2 / 1e9

    def report(kind, us, **extra):
        rate = {"tb_per_s": round(gigabytes / us * 1e3, 3)}
        print(json.dumps({**row, "kind": kind, "us": round(us, 2), **rate, **extra}), flush=True)

    def kernel(tiling):
        def call(weight):
            gemv.launch(x, weight, out, **args, tiling=tiling)

        return [functools.partial(call, w) for w in weights]

    report("cublas", time_us([functools.partial(torch.mv, w, x) for w in weights]))
    report(
        "pytorch", time_us([functools.partial(gemv.reference_gemv, x, w, **args) for w in weights])
    )
    # First tiles of 1-8 rows by 256-1024 columns, then warps and stages for the best two.
    results = [(time_us(kernel(gemv.Blocks(*tile))), gemv.Blocks(*tile)) for tile in TILES]
    results.sort(key=lambda result: result[0])
    for (_, best), warps, stages in itertools.product(results[:2], (2, 4, 8), (1, 3)):
        tiling = dataclasses.replace(best, warps=warps, stages=stages)
        results.append((time_us(kernel(tiling)), tiling))
    results.sort(key=lambda result: result[0])
    for us, tiling in results[:5]:
        report("triton", us, tiling=dataclasses.asdict(tiling))
    best = results[0][1]
    kernel(best)[0]()
    difference = (out.float() - reference.float()).abs().max().item()
    repeat = time_us(kernel(best))
    report("triton-best", repeat, tiling=dataclasses.asdict(best), max_abs_difference=difference)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuned", type=Path, help="write the fastest tilings here (JSON)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}))
    tuned = []
    for model, repo in REPOS.items():
        for name, shape in decode_products(repo).items():
            best = tune(model, name, *shape)
            tuned.append({"weight": shape[:2], "tiling": dataclasses.asdict(best)})
            torch.cuda.empty_cache()
    if args.tuned:
        args.tuned.write_text(json.dumps(tuned, indent=1))


if __name__ == "__main__":
    main()

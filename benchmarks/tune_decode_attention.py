"""Time the decode-attention kernels alone on a GPU for a few block sizes and warp counts.

A diagnostic for choosing ``BLOCK_POSITIONS`` and the kernels' warps:

    python benchmarks/tune_decode_attention.py
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

from localbench.engine.backends import decode_attention  # noqa: E402

SHAPES = {"qwen2.5-1.5b": (12, 2, 128, True), "llama-3.2-3b": (24, 8, 128, False)}


def time_us(fn, launches: int = 200) -> float:
    """Mean device time of ``fn`` replayed from a CUDA graph, in microseconds."""
    for _ in range(3):
        fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(launches):
            fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / launches


def main() -> None:
    max_len, position = 384, 320
    for name, (heads, kv_heads, dim, has_bias) in SHAPES.items():
        qkv = torch.randn((heads + 2 * kv_heads) * dim, device="cuda", dtype=torch.bfloat16)
        bias = torch.randn_like(qkv) if has_bias else None
        cos = torch.randn(max_len, dim, device="cuda", dtype=torch.bfloat16)
        sin = torch.randn_like(cos)
        keys = torch.randn(1, kv_heads, max_len, dim, device="cuda", dtype=torch.bfloat16)
        values = torch.randn_like(keys)
        at = torch.tensor([position], device="cuda")
        out = torch.empty(heads * dim, device="cuda", dtype=torch.bfloat16)
        for block in (16, 32, 64):
            for warps in (1, 2, 4, 8):
                decode_attention.BLOCK_POSITIONS = block
                decode_attention.NUM_WARPS = warps

                args = (qkv, bias, cos, sin, at, keys, values, out, dim**-0.5)
                step = functools.partial(decode_attention.launch, *args)
                row = {"model": name, "block": block, "warps": warps, "us": time_us(step)}
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

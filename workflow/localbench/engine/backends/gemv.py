"""A GPU kernel for a decode step's matrix-vector products, with what surrounds them.

At batch 1 each projection of a decode step is a matrix-vector product: it reads the
weight matrix once and does little else, so it should run at the memory bandwidth. Around
each sits a small kernel that costs a launch and a trip through memory for a few
kilobytes: the RMS norm before the query/key/value and gate/up projections, the SiLU
gate after the gate/up projection, the residual sum after the output and down
projections. Here one Triton kernel does the product together with them:

- ``norm_weight``: the input is RMS-normalised first (each program recomputes the mean
  square of the vector, a few kilobytes it reads from cache) and scaled by the norm's
  weight;
- ``gated``: the weight stacks a gate and an up projection; each program computes the
  same rows of both and returns ``silu(gate) * up``, half as many values;
- ``residual``: the result is added to it (the layer's residual stream).

Each program computes a block of output rows (one to four) over the whole input, the
weight read in rows as stored (the input dimension contiguous), products accumulated in
float32. On an H100 the seed models' products read their weights at 1.3-3.2 TB/s this
way (the small ones are bound by latency), 1.0-1.4x cuBLAS's batch-1 products
(``benchmarks/tune_gemv.py``). Rounding follows the PyTorch modules: the normalised
vector, the scaled vector, the products, the SiLU and the gated product are rounded to
the model's dtype where the modules store them.

``gemv`` runs the kernel as one PyTorch operator (which ``torch.compile`` traces around);
``reference_gemv`` is the same computation in PyTorch, the definition the kernel is tested
against (without a GPU in Triton's interpreter, with ``TRITON_INTERPRET=1`` set before
Triton is imported).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs may lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # read when Triton is imported


def available(device: torch.device) -> bool:
    """Whether the kernel can run: a CUDA device and Triton installed."""
    return triton is not None and device.type == "cuda"


def reference_gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    norm_weight: torch.Tensor | None = None,
    eps: float = 0.0,
    gated: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """The kernel's computation in PyTorch, as the model's modules do it: ``weight`` times
    the vector ``x`` (RMS-normalised first with ``norm_weight``), then gated, then added
    to ``residual``."""
    if norm_weight is not None:
        # transformers' Llama/Qwen2 RMSNorm: float32 statistics, rounded, then scaled.
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
        x = norm_weight * normed
    out = F.linear(x, weight)
    if gated:
        gate, up = out.chunk(2, dim=-1)
        out = F.silu(gate) * up
    return out if residual is None else residual + out


def _gemv_source(
    x_ptr,
    weight_ptr,
    norm_ptr,
    residual_ptr,
    out_ptr,
    eps,
    N: tl.constexpr,  # output rows (of each half of a gated weight)
    K: tl.constexpr,
    NORM: tl.constexpr,
    GATED: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    EVEN: tl.constexpr,  # blocks tile the weight exactly
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Rows ``BLOCK_N * program .. + BLOCK_N`` of the result; see ``reference_gemv``."""
    dtype = out_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    columns = tl.arange(0, BLOCK_K)
    if NORM:
        squares = tl.zeros([BLOCK_K], tl.float32)
        for start in range(0, K, BLOCK_K):
            k = start + columns
            value = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
            squares += value * value
        inverse_rms = tl.rsqrt(tl.sum(squares, 0) / K + eps)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    acc_up = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)  # the up half's, when gated
    for start in range(0, K, BLOCK_K):
        k = start + columns
        k_ok = k < K
        value = tl.load(x_ptr + k, mask=k_ok, other=0.0).to(tl.float32)
        if NORM:
            normed = (value * inverse_rms).to(dtype).to(tl.float32)
            scale = tl.load(norm_ptr + k, mask=k_ok, other=0.0).to(tl.float32)
            value = (normed * scale).to(dtype).to(tl.float32)
        at = weight_ptr + rows[:, None] * K + k[None, :]
        if EVEN:  # unmasked loads of the weight, the bulk of the traffic: widest accesses
            acc += tl.load(at).to(tl.float32) * value[None, :]
            if GATED:
                acc_up += tl.load(at + N * K).to(tl.float32) * value[None, :]
        else:
            mask = row_ok[:, None] & k_ok[None, :]
            acc += tl.load(at, mask=mask, other=0.0).to(tl.float32) * value[None, :]
            if GATED:
                up = tl.load(at + N * K, mask=mask, other=0.0).to(tl.float32)
                acc_up += up * value[None, :]
    out = tl.sum(acc, 1).to(dtype)
    if GATED:
        gate = out.to(tl.float32)
        silu = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
        out = (silu * tl.sum(acc_up, 1).to(dtype).to(tl.float32)).to(dtype)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        out = (residual + out.to(tl.float32)).to(dtype)
    tl.store(out_ptr + rows, out, mask=row_ok)


gemv_kernel = triton.jit(_gemv_source) if triton is not None else None


@dataclass(frozen=True)
class Blocks:
    """How the kernel tiles a product: output rows per program, input columns per step,
    warps and pipeline stages."""

    rows: int
    columns: int
    warps: int = 4
    stages: int = 3


# The fastest tilings of the seed models' decode-step products on an H100, per weight
# shape (rows, inputs), from benchmarks/tune_gemv.py (2026-11-24 fast-backend page);
# other shapes take ``blocks``' rule.
TUNED: dict[tuple[int, int], Blocks] = {
    # Qwen2.5-1.5B and DeepSeek-R1-Distill-Qwen-1.5B
    (2048, 1536): Blocks(4, 1024),  # query/key/value
    (1536, 1536): Blocks(1, 1024),  # output
    (17920, 1536): Blocks(1, 1024),  # gate/up
    (1536, 8960): Blocks(1, 1024),  # down
    (151936, 1536): Blocks(4, 1024),  # LM head
    # Llama-3.2-3B
    (5120, 3072): Blocks(4, 1024),
    (3072, 3072): Blocks(1, 1024),
    (16384, 3072): Blocks(1, 1024, warps=8, stages=1),
    (3072, 8192): Blocks(1, 1024, warps=2),
    (128256, 3072): Blocks(4, 1024, warps=8, stages=1),
}


def blocks(rows: int, inputs: int) -> Blocks:
    """The tiling of a ``rows`` x ``inputs`` weight's product: the tuned one, else what
    the tuning found for most shapes: a row per program (four for an LM head, whose
    programs are many and short) and 1,024 columns per step."""
    if (rows, inputs) in TUNED:
        return TUNED[rows, inputs]
    if INTERPRETED:  # programs run one after another there: few, large ones
        return Blocks(min(1024, triton.next_power_of_2(rows)), 128)
    return Blocks(4 if rows >= 16 * inputs else 1, 1024)


def launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    norm_weight: torch.Tensor | None = None,
    eps: float = 0.0,
    gated: bool = False,
    residual: torch.Tensor | None = None,
    tiling: Blocks | None = None,
) -> None:
    """Run the kernel (arguments as in ``reference_gemv``) into ``out``; ``tiling``
    overrides ``blocks``' choice."""
    if gemv_kernel is None:
        raise RuntimeError("the matrix-vector kernel needs Triton, which is not installed")
    rows, inputs = weight.shape
    if not weight.is_contiguous() or rows * inputs >= 2**31:
        raise ValueError(f"weight of shape {tuple(weight.shape)}: expected contiguous, < 2^31")
    tiling = tiling or blocks(rows, inputs)
    outputs = rows // 2 if gated else rows
    gemv_kernel[(triton.cdiv(outputs, tiling.rows),)](
        x,
        weight,
        norm_weight if norm_weight is not None else x,
        residual if residual is not None else out,
        out,
        eps,
        N=outputs,
        K=inputs,
        NORM=norm_weight is not None,
        GATED=gated,
        HAS_RESIDUAL=residual is not None,
        EVEN=outputs % tiling.rows == 0 and inputs % tiling.columns == 0,
        BLOCK_N=tiling.rows,
        BLOCK_K=tiling.columns,
        num_warps=tiling.warps,
        num_stages=tiling.stages,
    )


# An opaque operator with a shape-only fake, so torch.compile traces the decode step as
# one graph around it and the compiled graph calls it like a library kernel.
@torch.library.custom_op("localbench::gemv", mutates_args=())
def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    norm_weight: torch.Tensor | None,
    eps: float,
    gated: bool,
    residual: torch.Tensor | None,
) -> torch.Tensor:
    """The kernel on a CUDA device: ``reference_gemv``'s result as a new vector."""
    out = _new_output(x, weight, gated)
    launch(x, weight, out, norm_weight, eps, gated, residual)
    return out


def _new_output(x: torch.Tensor, weight: torch.Tensor, gated: bool) -> torch.Tensor:
    """An empty result vector: a value per weight row, half as many when gated."""
    return x.new_empty(weight.shape[0] // 2 if gated else weight.shape[0])


@gemv.register_fake
def _gemv_shape(x, weight, norm_weight, eps, gated, residual):
    return _new_output(x, weight, gated)

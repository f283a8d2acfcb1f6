"""Two GPU kernels for a decode step's attention in the Llama family.

Written out in PyTorch, one decode step's attention is a chain of small kernels per layer:
the projection's bias, the rotary embedding of the query and the key, two cache writes,
the scores, the softmax and the value sum. Each moves a few hundred kilobytes yet costs a
kernel's fixed start time. Here it is two Triton kernels per layer. The first runs a
program per key/value head and block of cache positions: it adds the bias, rotates the
query heads and the key, scores its block in float32 and keeps the block's softmax
maximum, sum and weighted value sum; the program whose block holds the current position
writes the key and value to the cache and uses them from registers (nothing reads back
what was just written). The second combines the blocks per head.

Rounding follows the PyTorch path: the biased projection, the rotated query and key and
the softmax weights are rounded to the model's dtype where that path stores them.

``decode_attention`` runs the kernels as one PyTorch operator (which ``torch.compile``
traces around); ``reference_decode_attention`` is the same computation in PyTorch, the
definition the kernel is tested against (without a GPU in Triton's interpreter, with
``TRITON_INTERPRET=1`` set before Triton is imported).
"""

from __future__ import annotations

import math

import torch

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs may lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None

BLOCK_POSITIONS = 64  # cache positions per program
NUM_WARPS = 4  # per program, both kernels


def available(device: torch.device, head_dim: int) -> bool:
    """Whether the kernels can run: a CUDA device, Triton installed, and a head size that
    is a power of two (Triton's blocks are), 32 or more (its matrix products need 16 per half)."""
    power_of_two = head_dim >= 32 and head_dim & (head_dim - 1) == 0
    return triton is not None and device.type == "cuda" and power_of_two


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def reference_decode_attention(
    qkv: torch.Tensor,
    bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """The kernel's computation in PyTorch.

    ``qkv`` holds one token's query, key and value projections (heads * D, then
    kv_heads * D twice), before ``bias``; ``cos``/``sin`` are (max_len, D) tables;
    ``position`` a one-element tensor; ``keys``/``values`` the (1, kv_heads, max_len, D)
    caches, written at ``position``. Returns the attention output, (heads * D,).
    """
    kv_heads, max_len, dim = keys.shape[1:]
    q_size = qkv.numel() - 2 * kv_heads * dim
    heads = q_size // dim
    if bias is not None:
        qkv = qkv + bias
    q, k, v = qkv.split([q_size, kv_heads * dim, kv_heads * dim])
    at = int(position)
    c, s = cos[at].float(), sin[at].float()
    q = q.view(heads, dim)
    k = k.view(kv_heads, dim)
    q = (q.float() * c + _rotate_half(q.float()) * s).to(qkv.dtype)
    k = (k.float() * c + _rotate_half(k.float()) * s).to(qkv.dtype)
    keys[0, :, at] = k
    values[0, :, at] = v.view(kv_heads, dim)
    group = heads // kv_heads
    rows = q.view(kv_heads, group, dim).float()
    scores = rows @ keys[0, :, : at + 1].float().transpose(-1, -2) * scale
    weights = torch.softmax(scores, dim=-1).to(qkv.dtype).float()
    out = weights @ values[0, :, : at + 1].float()
    return out.to(qkv.dtype).reshape(-1)


def _partial_source(
    qkv_ptr,
    bias_ptr,
    cos_ptr,
    sin_ptr,
    position_ptr,
    keys_ptr,
    values_ptr,
    best_ptr,
    total_ptr,
    acc_ptr,
    scale_log2e,
    CACHE_LEN: tl.constexpr,
    SPLITS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    Q_SIZE: tl.constexpr,
    KV_SIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Attention of one key/value head's query heads over one block of cache positions.

    Program (kv_head, block): the block's softmax maximum, sum and weighted value sum go
    to the scratch buffers, for ``_combine_source``; the block holding the current
    position also writes its key and value to the cache and uses them from registers.
    """
    HALF: tl.constexpr = HEAD_DIM // 2
    kv_head = tl.program_id(0)
    block = tl.program_id(1)
    dtype = keys_ptr.dtype.element_ty
    position = tl.load(position_ptr)
    start = block * BLOCK
    if start <= position:
        rows = tl.arange(0, GROUP_ROWS)
        row_ok = rows < GROUP
        half = tl.arange(0, HALF)
        full = tl.arange(0, HEAD_DIM)

        # This program's query heads (padded to GROUP_ROWS rows for the matrix unit), as
        # the two halves the rotary embedding swaps.
        q_at = (kv_head * GROUP + rows)[:, None] * HEAD_DIM + half[None, :]
        q1 = tl.load(qkv_ptr + q_at, mask=row_ok[:, None], other=0.0).to(tl.float32)
        q2 = tl.load(qkv_ptr + q_at + HALF, mask=row_ok[:, None], other=0.0).to(tl.float32)
        k_at = Q_SIZE + kv_head * HEAD_DIM + half
        k1 = tl.load(qkv_ptr + k_at).to(tl.float32)
        k2 = tl.load(qkv_ptr + k_at + HALF).to(tl.float32)
        v_at = Q_SIZE + KV_SIZE + kv_head * HEAD_DIM + full
        v = tl.load(qkv_ptr + v_at).to(tl.float32)
        if HAS_BIAS:  # rounded where the PyTorch path stores the biased projection
            q1 = (q1 + tl.load(bias_ptr + q_at, mask=row_ok[:, None], other=0.0)).to(dtype)
            q2 = (q2 + tl.load(bias_ptr + q_at + HALF, mask=row_ok[:, None], other=0.0)).to(dtype)
            k1 = (k1 + tl.load(bias_ptr + k_at)).to(dtype).to(tl.float32)
            k2 = (k2 + tl.load(bias_ptr + k_at + HALF)).to(dtype).to(tl.float32)
            v = (v + tl.load(bias_ptr + v_at)).to(dtype).to(tl.float32)
            q1, q2 = q1.to(tl.float32), q2.to(tl.float32)

        cos1 = tl.load(cos_ptr + position * HEAD_DIM + half).to(tl.float32)
        cos2 = tl.load(cos_ptr + position * HEAD_DIM + HALF + half).to(tl.float32)
        sin1 = tl.load(sin_ptr + position * HEAD_DIM + half).to(tl.float32)
        sin2 = tl.load(sin_ptr + position * HEAD_DIM + HALF + half).to(tl.float32)
        rq1 = (q1 * cos1[None, :] - q2 * sin1[None, :]).to(dtype)
        rq2 = (q2 * cos2[None, :] + q1 * sin2[None, :]).to(dtype)
        rk1 = (k1 * cos1 - k2 * sin1).to(dtype)
        rk2 = (k2 * cos2 + k1 * sin2).to(dtype)

        cache = kv_head * CACHE_LEN * HEAD_DIM
        n = start + tl.arange(0, BLOCK)
        n_ok = n < position  # the cache before this token
        at = cache + n[:, None] * HEAD_DIM
        key1 = tl.load(keys_ptr + at + half[None, :], mask=n_ok[:, None], other=0.0)
        key2 = tl.load(keys_ptr + at + HALF + half[None, :], mask=n_ok[:, None], other=0.0)
        scores = tl.dot(rq1, tl.trans(key1)) + tl.dot(rq2, tl.trans(key2))
        scores = tl.where(n_ok[None, :], scores * scale_log2e, float("-inf"))
        best = tl.max(scores, axis=1)
        # The current token's own key, from registers, in the block that holds it.
        current = position < start + BLOCK
        score = (
            tl.sum(rq1.to(tl.float32) * rk1.to(tl.float32)[None, :], axis=1)
            + tl.sum(rq2.to(tl.float32) * rk2.to(tl.float32)[None, :], axis=1)
        ) * scale_log2e
        score = tl.where(current, score, float("-inf"))
        best = tl.maximum(best, score)
        # In base 2 (the scale folds in log2 e); the weights are rounded to the model's
        # dtype as the PyTorch path's softmax output is.
        weights = tl.exp2(scores - best[:, None])
        weight = tl.exp2(score - best)
        total = tl.sum(weights, axis=1) + weight
        value = tl.load(values_ptr + at + full[None, :], mask=n_ok[:, None], other=0.0)
        acc = tl.dot(weights.to(dtype), value)
        acc += weight.to(dtype).to(tl.float32)[:, None] * v.to(dtype).to(tl.float32)[None, :]
        if current:
            tl.store(keys_ptr + cache + position * HEAD_DIM + half, rk1)
            tl.store(keys_ptr + cache + position * HEAD_DIM + HALF + half, rk2)
            tl.store(values_ptr + cache + position * HEAD_DIM + full, v.to(dtype))

        slot = (kv_head * SPLITS + block) * GROUP_ROWS + rows
        tl.store(best_ptr + slot, best)
        tl.store(total_ptr + slot, total)
        tl.store(acc_ptr + slot[:, None] * HEAD_DIM + full[None, :], acc)


def _combine_source(
    position_ptr,
    best_ptr,
    total_ptr,
    acc_ptr,
    out_ptr,
    SPLITS: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One key/value head's attention output from its blocks' partial results."""
    kv_head = tl.program_id(0)
    dtype = out_ptr.dtype.element_ty
    position = tl.load(position_ptr)
    rows = tl.arange(0, GROUP_ROWS)
    full = tl.arange(0, HEAD_DIM)
    best = tl.full([GROUP_ROWS], float("-inf"), tl.float32)
    total = tl.zeros([GROUP_ROWS], tl.float32)
    acc = tl.zeros([GROUP_ROWS, HEAD_DIM], tl.float32)
    for block in range(0, SPLITS):
        if block * BLOCK <= position:
            slot = (kv_head * SPLITS + block) * GROUP_ROWS + rows
            block_best = tl.load(best_ptr + slot)
            new_best = tl.maximum(best, block_best)
            old_scale = tl.exp2(best - new_best)
            block_scale = tl.exp2(block_best - new_best)
            total = total * old_scale + tl.load(total_ptr + slot) * block_scale
            block_acc = tl.load(acc_ptr + slot[:, None] * HEAD_DIM + full[None, :])
            acc = acc * old_scale[:, None] + block_acc * block_scale[:, None]
            best = new_best
    out = acc / total[:, None]
    out_at = (kv_head * GROUP + rows)[:, None] * HEAD_DIM + full[None, :]
    tl.store(out_ptr + out_at, out.to(dtype), mask=(rows < GROUP)[:, None])


def launch(
    qkv: torch.Tensor,
    bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    out: torch.Tensor,
    scale: float,
) -> None:
    """Run the kernels (arguments as in ``reference_decode_attention``) into ``out``.

    Blocks of cache positions are attended in parallel (a program per key/value head and
    block), then combined: a batch-1 decode step has too few heads to fill the GPU
    otherwise, and one program walking the whole cache is bound by its latency.
    """
    if partial_kernel is None:
        raise RuntimeError("the decode-attention kernel needs Triton, which is not installed")
    kv_heads, max_len, dim = keys.shape[1:]
    q_size = out.numel()
    group = q_size // dim // kv_heads
    group_rows = max(16, triton.next_power_of_2(group))
    splits = triton.cdiv(max_len, BLOCK_POSITIONS)
    best = torch.empty(kv_heads * splits * group_rows, device=qkv.device, dtype=torch.float32)
    total = torch.empty_like(best)
    acc = torch.empty(best.numel() * dim, device=qkv.device, dtype=torch.float32)
    shapes = {"GROUP": group, "GROUP_ROWS": group_rows, "HEAD_DIM": dim, "BLOCK": BLOCK_POSITIONS}
    partial_kernel[(kv_heads, splits)](
        qkv,
        bias if bias is not None else qkv,
        cos,
        sin,
        position,
        keys,
        values,
        best,
        total,
        acc,
        scale * math.log2(math.e),
        CACHE_LEN=max_len,
        SPLITS=splits,
        HAS_BIAS=bias is not None,
        Q_SIZE=q_size,
        KV_SIZE=kv_heads * dim,
        num_warps=NUM_WARPS,
        **shapes,
    )
    combine_kernel[(kv_heads,)](
        position, best, total, acc, out, SPLITS=splits, num_warps=NUM_WARPS, **shapes
    )


partial_kernel = triton.jit(_partial_source) if triton is not None else None
combine_kernel = triton.jit(_combine_source) if triton is not None else None


# An opaque operator with a shape-only fake, so torch.compile traces the decode step as
# one graph around it and the compiled graph calls it like a library kernel; its cache
# writes are declared, so the compiler updates the caches in place.
@torch.library.custom_op("localbench::decode_attention", mutates_args=("keys", "values"))
def decode_attention(
    qkv: torch.Tensor,
    bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """The kernels on a CUDA device: ``reference_decode_attention``'s result, and its
    cache writes."""
    out = _new_output(qkv, keys)
    launch(qkv, bias, cos, sin, position, keys, values, out, scale)
    return out


def _new_output(qkv: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """An empty attention output: the query heads of ``qkv`` (its keys and values cut)."""
    return qkv.new_empty(qkv.numel() - 2 * keys.shape[1] * keys.shape[3])


@decode_attention.register_fake
def _decode_attention_shape(qkv, bias, cos, sin, position, keys, values, scale):
    return _new_output(qkv, keys)

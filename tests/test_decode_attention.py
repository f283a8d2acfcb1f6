"""The decode-attention kernel computes what the PyTorch attention of a decode step does.

Without a GPU the kernel runs in Triton's interpreter (see conftest.py) on CPU tensors.
"""

from __future__ import annotations

import pytest
import torch
from conftest import trace_as_one_graph

pytest.importorskip("triton")

from localbench.engine.backends import decode_attention  # noqa: E402
from localbench.engine.backends.fast import FastDecoder  # noqa: E402
from localbench.measure.inputs import prompt_ids  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _skip_on_a_gpu_unless_supported(head_dim):
    # Compiled for a GPU, Triton's matrix products need 16 values per half head; the
    # interpreter runs the tiny models' smaller heads too. The decoder checks the same.
    if DEVICE.type == "cuda" and not decode_attention.available(DEVICE, head_dim):
        pytest.skip(f"head size {head_dim}: the decoder uses PyTorch attention there")


def _inputs(heads, kv_heads, dim, max_len, position, bias, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(DEVICE, dtype)

    angles = torch.randn(max_len, dim // 2, generator=generator)
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(DEVICE, dtype)
    sin = torch.cat([angles.sin(), angles.sin()], -1).to(DEVICE, dtype)
    qkv = rand((heads + 2 * kv_heads) * dim)
    return {
        "qkv": qkv,
        "bias": rand(qkv.numel()) if bias else None,
        "cos": cos,
        "sin": sin,
        "position": torch.tensor([position], device=DEVICE),
        "keys": rand(1, kv_heads, max_len, dim),
        "values": rand(1, kv_heads, max_len, dim),
        "scale": dim**-0.5,
    }


@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim", "bias"),
    [(12, 2, 128, True), (24, 8, 128, False), (4, 4, 16, False), (6, 1, 64, True)],
    ids=["qwen2.5-1.5b", "llama-3.2-3b", "no-groups", "one-kv-head"],
)
@pytest.mark.parametrize("position", [0, 1, 63, 64, 150])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_the_pytorch_attention(heads, kv_heads, dim, bias, position, dtype):
    _skip_on_a_gpu_unless_supported(dim)
    expected = _inputs(heads, kv_heads, dim, 160, position, bias, dtype)
    got = _inputs(heads, kv_heads, dim, 160, position, bias, dtype)
    reference = decode_attention.reference_decode_attention(**expected)
    out = torch.empty(heads * dim, device=DEVICE, dtype=dtype)
    decode_attention.launch(out=out, **got)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out, reference, atol=tolerance, rtol=tolerance)
    # The key and value of this position were written; no other cache entry changed.
    torch.testing.assert_close(got["keys"], expected["keys"], atol=tolerance, rtol=0)
    torch.testing.assert_close(got["values"], expected["values"], atol=0, rtol=0)


def test_the_reference_is_attention_over_the_cache():
    """The reference itself against a plain softmax(q k^T) v over positions 0..position."""
    inputs = _inputs(4, 2, 8, 12, 5, True, torch.float32)
    qkv = inputs["qkv"] + inputs["bias"]
    out = decode_attention.reference_decode_attention(**inputs)
    q = qkv[:32].view(4, 8)
    c, s = inputs["cos"][5], inputs["sin"][5]
    q = q * c + torch.cat([-q[:, 4:], q[:, :4]], -1) * s
    keys = inputs["keys"][0, :, :6]  # written at position 5 by the call
    values = inputs["values"][0, :, :6]
    assert torch.equal(values[:, 5], qkv[48:].view(2, 8))
    for head in range(4):
        kv = head // 2
        weights = torch.softmax(q[head] @ keys[kv].T / 8**0.5, -1)
        torch.testing.assert_close(out.view(4, 8)[head], weights @ values[kv])


@pytest.mark.parametrize("repo", ["Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"])
def test_decoder_with_the_kernel_gives_the_same_tokens(tiny_checkpoint_model, repo):
    loaded = tiny_checkpoint_model(repo)
    input_ids = prompt_ids(loaded.processor, 7)
    plain = FastDecoder(loaded.model, max_len=40, fuse=True, attention_kernel=False)
    _skip_on_a_gpu_unless_supported(plain.head_dim)
    expected = plain.generate(input_ids, 24).tokens
    decoder = FastDecoder(loaded.model, max_len=40, fuse=True, attention_kernel=True)
    assert decoder.details("host clock")["decode_attention"] == "triton kernel"
    # Twice: the second request overwrites the cache the first one left.
    assert decoder.generate(input_ids, 24).tokens == expected
    assert decoder.generate(input_ids, 24).tokens == expected
    trace_as_one_graph(decoder._decode_step)  # and the step is one graph, as capture needs


def test_the_kernel_is_used_for_power_of_two_heads_on_cuda_only():
    assert decode_attention.available(torch.device("cuda"), 128) == (
        decode_attention.triton is not None
    )
    assert not decode_attention.available(torch.device("cuda"), 80)
    assert not decode_attention.available(torch.device("cuda"), 16)
    assert not decode_attention.available(torch.device("cpu"), 128)


def test_the_kernel_needs_the_fused_projections(tiny_checkpoint_model):
    loaded = tiny_checkpoint_model("Qwen/Qwen2.5-1.5B-Instruct")
    with pytest.raises(ValueError, match="fused"):
        FastDecoder(loaded.model, max_len=8, fuse=False, attention_kernel=True)

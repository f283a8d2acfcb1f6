"""The matrix-vector kernel computes what the model's norm, projection, gate and residual do.

Without a GPU the kernel runs in Triton's interpreter (see conftest.py) on CPU tensors.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import trace_as_one_graph

pytest.importorskip("triton")

from localbench.engine.backends import gemv  # noqa: E402
from localbench.engine.backends.fast import FastDecoder  # noqa: E402
from localbench.measure.inputs import prompt_ids  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inputs(rows, inputs, norm, gated, residual, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(DEVICE, dtype)

    outputs = rows // 2 if gated else rows
    return {
        "x": rand(inputs),
        "weight": rand(rows, inputs, scale=inputs**-0.5),
        "norm_weight": rand(inputs) if norm else None,
        "eps": 1e-6,
        "gated": gated,
        "residual": rand(outputs) if residual else None,
    }


# (weight rows, inputs, tiling): blocks that tile the weight exactly, rows and inputs left
# over, one row per program, and the default choice.
SHAPES = [
    (32, 64, gemv.Blocks(8, 32)),
    (40, 96, gemv.Blocks(16, 64)),
    (24, 80, gemv.Blocks(1, 128)),
    (48, 128, None),
]


@pytest.mark.parametrize(
    ("rows", "inputs", "tiling"), SHAPES, ids=["even", "ragged", "one-row", "default"]
)
@pytest.mark.parametrize(
    ("norm", "gated", "residual"),
    [(False, False, False), (True, False, False), (True, True, False), (False, False, True)],
    ids=["product", "qkv-and-lm-head", "gate-up", "output-and-down"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_its_pytorch_definition(rows, inputs, tiling, norm, gated, residual, dtype):
    args = _inputs(rows, inputs, norm, gated, residual, dtype)
    expected = gemv.reference_gemv(**args)
    out = torch.full_like(expected, float("nan"))
    gemv.launch(out=out, tiling=tiling, **args)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("repo", ["Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"])
def test_the_reference_is_what_the_model_computes(tiny_checkpoint_model, repo):
    """In bf16, the norm, projection, gate and residual as the modules compute them."""
    model = copy.deepcopy(tiny_checkpoint_model(repo).model).to(torch.bfloat16)
    layer = model.model.layers[0]
    mlp, attention = layer.mlp, layer.self_attn
    norm = layer.post_attention_layernorm
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, model.config.hidden_size, generator=generator).to(torch.bfloat16)
    with torch.no_grad():
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        gated = gemv.reference_gemv(x.view(-1), gate_up, norm.weight, norm.variance_epsilon, True)
        normed = norm(x)
        expected = mlp.act_fn(mlp.gate_proj(normed)) * mlp.up_proj(normed)
        assert torch.equal(gated, expected.view(-1))
        # The residual sum adds the rounded product, as ``x + o_proj(out)`` does.
        out = torch.randn(attention.o_proj.in_features, generator=generator).to(torch.bfloat16)
        summed = gemv.reference_gemv(out, attention.o_proj.weight, residual=x.view(-1))
        assert torch.equal(summed, (x + attention.o_proj(out.view(1, 1, -1))).view(-1))


@pytest.mark.parametrize("repo", ["Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"])
def test_decoder_with_the_kernels_gives_the_same_tokens(tiny_checkpoint_model, repo):
    loaded = tiny_checkpoint_model(repo)
    input_ids = prompt_ids(loaded.processor, 7)
    plain = FastDecoder(loaded.model, max_len=40, fuse=True, attention_kernel=False)
    if DEVICE.type == "cuda" and plain.head_dim < 32:
        pytest.skip(f"head size {plain.head_dim}: the decoder uses PyTorch attention there")
    expected = plain.generate(input_ids, 24).tokens
    decoder = FastDecoder(
        loaded.model, max_len=40, fuse=True, attention_kernel=True, linear_kernels=True
    )
    assert decoder.details("host clock")["decode_projections"] == "triton kernel"
    assert decoder.generate(input_ids, 24).tokens == expected
    trace_as_one_graph(decoder._decode_step)  # and the step is one graph, as capture needs


def test_the_kernels_need_the_attention_kernel(tiny_checkpoint_model):
    loaded = tiny_checkpoint_model("Qwen/Qwen2.5-1.5B-Instruct")
    with pytest.raises(ValueError, match="decode-attention kernel"):
        FastDecoder(loaded.model, max_len=8, fuse=True, attention_kernel=False, linear_kernels=True)


def test_the_kernels_are_used_on_cuda_only(tiny_checkpoint_model):
    assert gemv.available(torch.device("cuda")) == (gemv.triton is not None)
    assert not gemv.available(torch.device("cpu"))
    loaded = tiny_checkpoint_model("Qwen/Qwen2.5-1.5B-Instruct")
    decoder = FastDecoder(loaded.model, max_len=8, fuse=True)
    assert decoder.linear_kernels == (DEVICE.type == "cuda")


def test_tilings_come_from_the_tuning_table_or_the_rule(monkeypatch):
    assert gemv.blocks(2048, 1536) == gemv.TUNED[2048, 1536]  # Qwen2.5's query/key/value
    monkeypatch.setattr(gemv, "INTERPRETED", False)
    assert gemv.blocks(4096, 2048) == gemv.Blocks(1, 1024)
    assert gemv.blocks(50000, 2048) == gemv.Blocks(4, 1024)  # an LM head

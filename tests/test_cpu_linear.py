"""The CPU products of the fast backend: the C++ kernel computes what F.linear does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from localbench.engine.backends import cpu_linear

pytestmark = pytest.mark.skipif(
    cpu_linear.unavailable_reason() is not None,
    reason=f"the CPU kernel is not built here: {cpu_linear.unavailable_reason()}",
)


def _reference(x, weight, bias):
    """The product in float32, rounded once to the weight's dtype."""
    out = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
    return out.to(weight.dtype)


# Row counts of the row kernel (1-4) and of the panel kernel (full register tiles of 6
# rows and remainders); output and input sizes that are not multiples of the kernels'
# blocks of 16.
@pytest.mark.parametrize("rows", [1, 2, 4, 5, 6, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_kernel_equals_the_float32_product(rows, dtype, with_bias):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(37, 83, generator=generator).to(dtype)
    x = torch.randn(rows, 83, generator=generator).to(dtype)
    bias = torch.randn(37, generator=generator).to(dtype) if with_bias else None
    out = cpu_linear.kernel_linear(x, weight, bias)
    expected = _reference(x, weight, bias)
    assert out.dtype == dtype and out.shape == (rows, 37)
    # Only the order of the float32 sums differs: at most one rounding step apart.
    tolerance = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out.float(), expected.float(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("outputs", [37, 40])
def test_long_rows_of_a_decode_step_equal_the_float32_product(dtype, outputs):
    """Rows of 4096 inputs and more are read a block of four at a time: output counts
    that are and are not multiples of the block, an input size past the 32-value step."""
    generator = torch.Generator().manual_seed(outputs)
    weight = torch.randn(outputs, 4141, generator=generator).to(dtype)
    x = torch.randn(1, 4141, generator=generator).to(dtype)
    out = cpu_linear.kernel_linear(x, weight, None)
    tolerance = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(
        out.float(), _reference(x, weight, None).float(), rtol=tolerance, atol=tolerance
    )


def test_products_keep_the_leading_shape_and_take_strided_weights():
    products = cpu_linear.Products(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 48, generator=generator).to(torch.bfloat16).t()  # not contiguous
    for shape in [(1, 1, 64), (1, 3, 64), (1, 40, 64)]:
        x = torch.randn(*shape, generator=generator).to(torch.bfloat16)
        out = products.linear(x, weight)
        assert out.shape == (*shape[:-1], 48)
        torch.testing.assert_close(
            out.float(), _reference(x, weight, None).float(), rtol=1e-2, atol=1e-2
        )


def test_switched_off_kernel_says_why_and_pytorch_computes_the_same(monkeypatch):
    monkeypatch.setenv("LOCALBENCH_CPU_KERNEL", "0")
    products = cpu_linear.Products(torch.bfloat16)
    assert not products.kernel
    assert "LOCALBENCH_CPU_KERNEL=0" in products.describe()["cpu_kernel_error"]
    assert products.describe()["decode_projections"] == "pytorch"
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(50, 30, generator=generator).to(torch.bfloat16)
    x = torch.randn(1, 9, 30, generator=generator).to(torch.bfloat16)
    torch.testing.assert_close(
        products.linear(x, weight).float(),
        _reference(x, weight, None).float(),
        rtol=1e-2,
        atol=1e-2,
    )

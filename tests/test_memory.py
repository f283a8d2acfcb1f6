import pytest
from localbench.engine.memory import GB, estimate


def test_estimate_is_weights_plus_allowance_plus_headroom():
    e = estimate(1_000_000_000, "bfloat16", 0.5, 100 * 10**9, "test")
    assert e.weights_bytes == 2_000_000_000
    assert e.needed_bytes == int(2e9 * 1.1 + 0.5e9)
    assert e.fits


def test_deepseek_vl2_small_needs_about_36_gb_and_not_24():
    e = estimate(16_148_349_504, "bfloat16", 0.5, 24 * 10**9, "MemAvailable")
    assert not e.fits
    assert e.reason().startswith("needs ~36 GB, 24 GB available")


def test_float32_doubles_the_weights():
    half = estimate(10**9, "float16", 0.0, 10**12, "x")
    full = estimate(10**9, "float32", 0.0, 10**12, "x")
    assert full.weights_bytes == 2 * half.weights_bytes


def test_exact_fit_is_allowed():
    needed = estimate(10**9, "float32", 0.0, 0, "x").needed_bytes
    assert estimate(10**9, "float32", 0.0, needed, "x").fits
    assert not estimate(10**9, "float32", 0.0, needed - 1, "x").fits


def test_negative_parameters_are_rejected():
    with pytest.raises(ValueError):
        estimate(-1, "float32", 0.0, GB, "x")


def test_record_states_its_method():
    record = estimate(10, "float32", 0.5, GB, "x").to_dict()
    assert record["fits"] is True
    assert "parameters x bytes per parameter" in record["method"]

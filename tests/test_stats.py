import math
import statistics

import pytest
from localbench.measure.stats import Measurement, percentile


def test_percentile_interpolates_between_ranks():
    values = [10, 20, 30, 40]
    assert percentile(values, 0) == 10
    assert percentile(values, 100) == 40
    assert percentile(values, 50) == 25
    assert percentile(values, 90) == pytest.approx(37)


def test_percentile_ignores_input_order():
    assert percentile([3, 1, 2], 50) == 2


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_measurement_matches_the_standard_library():
    values = [12.0, 15.5, 11.0, 19.25, 14.0]
    m = Measurement.from_values(values, "ms")
    assert m.count == 5
    assert m.mean == pytest.approx(statistics.mean(values))
    assert m.median == pytest.approx(statistics.median(values))
    assert m.stdev == pytest.approx(statistics.stdev(values))
    assert m.cv == pytest.approx(statistics.stdev(values) / statistics.mean(values))
    assert (m.min, m.max) == (11.0, 19.25)
    assert m.values == values
    assert m.to_dict()["unit"] == "ms"


def test_single_sample_has_no_spread():
    m = Measurement.from_values([5.0], "tokens/s")
    assert m.stdev == 0.0 and m.cv == 0.0 and m.p90 == 5.0


def test_measurement_refuses_no_samples_and_nan():
    with pytest.raises(ValueError, match="no samples"):
        Measurement.from_values([], "ms")
    with pytest.raises(ValueError, match="NaN"):
        Measurement.from_values([1.0, math.nan], "ms")

"""Summary statistics built from raw samples, the same way for every metric.

Every statistic in a result comes from :meth:`Measurement.from_values`, and the raw
samples are kept beside it so any other statistic can be derived later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Measurement:
    """Count, location and spread of one metric over repeated runs, with the raw values."""

    unit: str
    count: int
    mean: float
    median: float
    p90: float
    min: float
    max: float
    stdev: float
    cv: float
    values: list[float] = field(default_factory=list)

    @classmethod
    def from_values(cls, values: Sequence[float], unit: str) -> Measurement:
        """Build a measurement from raw samples; stdev is the sample (n-1) deviation."""
        samples = [float(v) for v in values]
        if not samples:
            raise ValueError(f"no samples for a measurement in {unit}")
        if any(math.isnan(v) for v in samples):
            raise ValueError(f"NaN among the samples for a measurement in {unit}")
        n = len(samples)
        mean = sum(samples) / n
        stdev = math.sqrt(sum((v - mean) ** 2 for v in samples) / (n - 1)) if n > 1 else 0.0
        cv = stdev / mean if mean else 0.0
        return cls(
            unit=unit,
            count=n,
            mean=mean,
            median=percentile(samples, 50),
            p90=percentile(samples, 90),
            min=min(samples),
            max=max(samples),
            stdev=stdev,
            cv=cv,
            values=samples,
        )

    def to_dict(self) -> dict:
        """A plain dict for JSON."""
        return asdict(self)

"""Did a model get faster or slower on one machine? A result against an earlier one.

Two results of the same model and backend on the same profile are compared on the raw
per-run samples each result keeps (``metrics.<metric>.values``), never on their medians
alone: a change is flagged only when a two-sided Mann-Whitney U test says the two sets of
runs differ (p below :data:`ALPHA`) *and* the medians differ by at least
:data:`MIN_RELATIVE_CHANGE`, so a difference within the measured run-to-run spread, or
one too small to matter, is never called a regression. The effect size is stated beside
the p-value: the relative change of the medians and Cliff's delta (the rank-biserial
correlation of the U test). With too few runs the test cannot reach ``p < ALPHA`` at
all, and the comparison says so instead of guessing.

What else changed between the two runs (package versions, the project's commit, the
model's settings) is read from the two result records.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy.stats import mannwhitneyu

from localbench.results import RECORDED_PACKAGES
from localbench.status import MEASURED

# A change is flagged when p < ALPHA and the medians differ by MIN_RELATIVE_CHANGE or more.
ALPHA = 0.01
MIN_RELATIVE_CHANGE = 0.02

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"
NOT_TESTED_N = "not tested (n too small)"
NOT_TESTED_SAMPLES = "not tested (no raw samples on one side)"
NO_EARLIER = "no earlier measurement"
VERDICTS = (REGRESSION, IMPROVEMENT, NO_CHANGE, NOT_TESTED_N, NOT_TESTED_SAMPLES, NO_EARLIER)

# The metrics tested per task: (metric, words, higher is better). The first is the
# task's speed metric of the comparison table.
TESTED_METRICS = {
    "text-generation": [
        ("decode_tokens_per_s", "decode tokens/s", True),
        ("ttft_ms", "time to first token, ms", False),
    ],
    "image-captioning": [("latency_ms", "ms per image", False)],
    "visual-question-answering": [("latency_ms", "ms per image", False)],
    "multimodal": [("latency_ms", "ms per request", False)],
    "speech-recognition": [("real_time_factor", "real-time factor", False)],
}
# A result keeps one sample per measured run of each tested metric; far more is not a
# result file this project wrote.
MAX_SAMPLES = 10_000
# The longest setting value shown (a compile error can be long).
SHOWN_VALUE_CHARS = 60


class BadResult(ValueError):
    """A result record that cannot be compared, with the one reason why (naming the key)."""


def smallest_p_value(n_before: int, n_after: int) -> float:
    """The smallest two-sided p-value the exact Mann-Whitney U test can give for these
    sample sizes: every run of one side beyond every run of the other."""
    return min(1.0, 2 / math.comb(n_before + n_after, n_before))


def min_runs_each(alpha: float = ALPHA) -> int:
    """The fewest runs on each side with which the test can reach ``p < alpha``."""
    runs = 1
    while smallest_p_value(runs, runs) >= alpha:
        runs += 1
    return runs


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class ChangeTest:
    """One metric of one model, before against after: sizes, medians, effect, verdict."""

    n_before: int
    n_after: int
    median_before: float
    median_after: float
    relative_change: float  # after / before - 1
    cliffs_delta: float  # P(after > before) - P(after < before), from U
    p_value: float | None  # None when not tested
    verdict: str
    faster: bool | None  # the direction in the metric's own sense; None without change

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def compare_samples(
    before: Sequence[float],
    after: Sequence[float],
    higher_is_better: bool,
    alpha: float = ALPHA,
    min_relative_change: float = MIN_RELATIVE_CHANGE,
) -> ChangeTest:
    """Whether ``after`` differs from ``before`` beyond their run-to-run spread.

    Flagged (``regression`` or ``improvement``) only when the two-sided Mann-Whitney U
    test gives ``p < alpha`` and the medians differ by at least ``min_relative_change``;
    ``not tested (n too small)`` when no outcome of these sample sizes could reach
    ``p < alpha``.
    """
    if not before or not after:
        raise ValueError("a change test needs samples on both sides")
    median_before, median_after = median(before), median(after)
    relative = median_after / median_before - 1 if median_before else math.inf
    faster = None
    if median_after != median_before:
        faster = (median_after > median_before) == higher_is_better
    pairs = len(before) * len(after)
    if len(set(before) | set(after)) == 1:
        # All equal: nothing changed (SciPy's p-value is undefined without any spread).
        u_after, p_value = pairs / 2, 1.0
    else:
        test = mannwhitneyu(after, before, alternative="two-sided")
        u_after, p_value = float(test.statistic), float(test.pvalue)
    # U of "after" counts the pairs where after wins, ties as halves: Cliff's delta,
    # P(after > before) - P(after < before), is 2U / (n1 n2) - 1.
    cliffs_delta = 2 * u_after / pairs - 1
    if smallest_p_value(len(before), len(after)) >= alpha:
        return ChangeTest(
            len(before), len(after), median_before, median_after, relative,
            cliffs_delta, None, NOT_TESTED_N, faster,
        )  # fmt: skip
    verdict = NO_CHANGE
    if p_value < alpha and abs(relative) >= min_relative_change:
        verdict = IMPROVEMENT if faster else REGRESSION
    return ChangeTest(
        len(before), len(after), median_before, median_after, relative,
        cliffs_delta, p_value, verdict, faster,
    )  # fmt: skip


@dataclass
class ComparedResult:
    """What the comparison takes from one result record."""

    source: str
    model: str
    backend: str
    task: str
    finished_at: dt.datetime
    samples: dict[str, list[float]] = field(default_factory=dict)
    setup: dict[str, str] = field(default_factory=dict)


def _key(record: dict, key: str, kind: type) -> object:
    value = record.get(key)
    if not isinstance(value, kind):
        raise BadResult(f"{key}: missing or not a {kind.__name__}")
    return value


def _samples(metrics: dict, metric: str) -> list[float] | None:
    """The raw samples of ``metric``; None when the result has no such metric; a
    :class:`BadResult` naming the key when they are not finite numbers >= 0."""
    measurement = metrics.get(metric)
    if measurement is None:
        return None
    key = f"metrics.{metric}.values"
    values = measurement.get("values") if isinstance(measurement, dict) else None
    if not isinstance(values, list) or not values:
        raise BadResult(f"{key}: missing or not a list of samples")
    if len(values) > MAX_SAMPLES:
        raise BadResult(f"{key}: more than {MAX_SAMPLES} samples")
    for value in values:
        number_like = isinstance(value, int | float) and not isinstance(value, bool)
        if not number_like or not math.isfinite(value) or value < 0:
            raise BadResult(f"{key}: {str(value)[:20]!r} is not a finite number >= 0")
    return [float(v) for v in values]


def parse_result(data: bytes, source: str) -> ComparedResult | None:
    """A result file's bytes as what the comparison needs; None for a result that was
    not measured. :class:`BadResult` names the key that cannot be used."""
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadResult("not UTF-8 text") from None
    except (ValueError, RecursionError) as error:
        raise BadResult(f"not JSON ({str(error)[:80]})") from None
    if not isinstance(record, dict):
        raise BadResult("not a JSON object")
    if record.get("status") != MEASURED:
        return None
    task = _key(record, "task", str)
    if task not in TESTED_METRICS:
        return None
    finished = _key(record, "finished_at", str)
    try:
        finished_at = dt.datetime.fromisoformat(finished)
    except ValueError:
        raise BadResult(f"finished_at: {finished[:40]!r} is not an ISO date and time") from None
    if finished_at.tzinfo is None:
        finished_at = finished_at.replace(tzinfo=dt.UTC)
    metrics = _key(record, "metrics", dict)
    samples = {}
    for metric, _words, _higher in TESTED_METRICS[task]:
        values = _samples(metrics, metric)
        if values is not None:
            samples[metric] = values
    return ComparedResult(
        source=source,
        model=_key(record, "model", str),
        backend=record.get("backend_requested") or "eager",
        task=task,
        finished_at=finished_at.astimezone(dt.UTC),
        samples=samples,
        setup=setup(record),
    )


# Results written before ``environment.software`` existed name a few packages in
# ``environment.hardware`` (read once per profile, so possibly older than the run).
LEGACY_PACKAGE_KEYS = {
    "torch": "torch",
    "transformers": "transformers",
    "huggingface-hub": "huggingface_hub",
    "snakemake": "snakemake",
}
# What a result says about how it ran, beyond the software: (label, path of keys).
SETUP_KEYS = (
    ("device", ("device",)),
    ("dtype", ("dtype",)),
    ("threads", ("torch_threads",)),
    ("backend used", ("backend", "used")),
    ("decode attention", ("backend", "decode_attention")),
    ("decode projections", ("backend", "decode_projections")),
    ("prompt projections", ("backend", "prompt_projections")),
    ("CUDA graph", ("backend", "cuda_graph")),
    ("CPU kernel flags", ("backend", "cpu_kernel_flags")),
    ("compile error", ("backend", "compile_error")),
    ("weights", ("manifest", "source")),
    ("synthetic weights", ("manifest", "synthetic")),
    ("weights commit", ("manifest", "resolved_commit")),
    ("revision", ("revision",)),
    ("NVIDIA driver", ("environment", "hardware", "nvidia_driver")),
    ("OS release", ("environment", "hardware", "os_release")),
)


def _dig(record: object, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _text(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None if value is None else json.dumps(value, sort_keys=True)[:SHOWN_VALUE_CHARS]
    text = str(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[:SHOWN_VALUE_CHARS] + "..."


def setup(record: dict) -> dict[str, str]:
    """What a result records about how it ran: package versions, Python, the project's
    commit, device, dtype, threads, backend details, benchmark settings, weights, driver.
    Labels map to short texts; what the result does not record is left out."""
    environment = record.get("environment") if isinstance(record.get("environment"), dict) else {}
    software = environment.get("software") if isinstance(environment.get("software"), dict) else {}
    hardware = environment.get("hardware") if isinstance(environment.get("hardware"), dict) else {}
    packages = software.get("packages") if isinstance(software.get("packages"), dict) else {}
    found: dict[str, str] = {}
    for name in RECORDED_PACKAGES:
        version = packages.get(name)
        if version is None and not packages and name in LEGACY_PACKAGE_KEYS:
            version = hardware.get(LEGACY_PACKAGE_KEYS[name])
        if (text := _text(version)) is not None:
            found[name] = text
    for label, value in (
        ("python", software.get("python") or hardware.get("python")),
        ("torch CUDA", software.get("torch_cuda") or hardware.get("cuda")),
        ("project commit", software.get("commit")),
    ):
        if (text := _text(value)) is not None:
            found[label] = text
    for label, path in SETUP_KEYS:
        if (text := _text(_dig(record, path))) is not None:
            found[label] = text
    bench = _dig(record, ("settings", "benchmark"))
    if isinstance(bench, dict):
        for key in sorted(bench):
            if (text := _text(bench[key])) is not None:
                found[f"benchmark {key}"] = text
    return found


def differences(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(label, before, after)`` for every setting that differs, in the order of
    :func:`setup`; a setting only one side records reads ``not recorded`` on the other."""
    labels = list(dict.fromkeys([*after, *before]))
    return [
        (label, before.get(label, "not recorded"), after.get(label, "not recorded"))
        for label in labels
        if before.get(label) != after.get(label)
    ]

"""The names of the summary's charts, their titles and captions: what the workflow plans
with at parse time and the summary links, without drawing anything (no matplotlib).
The charts themselves: :mod:`localbench.report.charts`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from localbench.report.summary import TASK_LABELS

# Chart file names (without extension) inside results/<profile>/charts/.
SPEED_CHART = "speed-{task}"
MEMORY_CHART = "peak-memory"
ROOFLINE_CHART = "decode-roofline"
THROUGHPUT_CHART = "throughput"
COMPARISON_CHART = "comparison"

# The task whose results carry a decode roofline (bytes read per token).
ROOFLINE_TASK = "text-generation"


def chart_names(tasks: Iterable[str]) -> list[str]:
    """The charts of a run whose models have ``tasks``: one speed chart per task, the
    memory chart, and the roofline when a text-generation model is configured."""
    tasks = list(dict.fromkeys(tasks))
    names = [SPEED_CHART.format(task=task) for task in tasks] + [MEMORY_CHART]
    if ROOFLINE_TASK in tasks:
        names.append(ROOFLINE_CHART)
    return names


def chart_title(name: str) -> str:
    """What the chart ``name`` (from :func:`chart_names`) shows, in a few words."""
    if name == THROUGHPUT_CHART:
        return "What batching buys: aggregate decode rate against batch size"
    if name == MEMORY_CHART:
        return "Peak memory against the 16 / 24 / 32 GB tiers"
    if name == ROOFLINE_CHART:
        return "Decode roofline: bytes read per second against the measured bandwidth"
    task = name.removeprefix(SPEED_CHART.format(task=""))
    return f"{TASK_LABELS.get(task, task)}: decode speed and time to first token"


def caption_name(name: str) -> str:
    """The caption file (``workflow/report/<caption>.rst``) of the chart ``name``."""
    if name == MEMORY_CHART:
        return "chart-memory"
    if name == ROOFLINE_CHART:
        return "chart-roofline"
    return "chart-speed"


def chart_links(charts: list[str]) -> dict:
    """The chart images a summary links, by place: ``speed`` (by task), ``memory`` and
    ``roofline``, each ``{title, path}`` with the path as given (relative to the summary)."""
    links: dict = {"speed": {}, "memory": None, "roofline": None, "throughput": None}
    for path in charts:
        name = Path(path).stem
        link = {"title": chart_title(name), "path": path}
        if name == THROUGHPUT_CHART:
            links["throughput"] = link
        elif name == MEMORY_CHART:
            links["memory"] = link
        elif name == ROOFLINE_CHART:
            links["roofline"] = link
        else:
            links["speed"][name.removeprefix(SPEED_CHART.format(task=""))] = link
    return links

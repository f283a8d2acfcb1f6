"""The charts of the summary and the HTML report, drawn with matplotlib on the Agg canvas.

Every number comes from this run's result files: medians, the 10th and 90th percentiles
of the raw samples each result keeps, peak memory, and the roofline record of the run's
measured bandwidth. A model that was not measured keeps its row with its status and
reason written in place of a bar, never a bar. Weights that are random are said on the
label ("synthetic weights"), as in the tables.

Each chart is written as PNG (for the Markdown summary and the HTML report) and SVG (for
print and zooming), byte for byte the same for the same results: no dates in the files,
SVG ids from a fixed salt.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from localbench.atomic import write_bytes
from localbench.measure.stats import percentile
from localbench.report.chart_names import (
    MEMORY_CHART,
    ROOFLINE_CHART,
    ROOFLINE_TASK,
    SPEED_CHART,
    THROUGHPUT_CHART,
    chart_names,
)
from localbench.report.summary import TASK_LABELS, TIER_SHARE, TIERS_GB, weights_label
from localbench.results import MEASURED, STATUS_LABELS

GB = 1e9
# One colour per backend (Tableau 10, told apart with colour-blindness too).
BACKEND_COLOURS = {"eager": "#4c78a8", "fast": "#f58518"}
OTHER_COLOUR = "#54a24b"
TIER_COLOURS = ("#54a24b", "#b279a2", "#9d755d")
NOT_MEASURED_COLOUR = "#6b6b6b"
# A reason written in place of a bar is cut to this many characters.
REASON_LENGTH = 60
PNG_DPI = 150
FIGURE_WIDTH_IN = 10.0
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "x",
    "grid.color": "#dddddd",
    "axes.axisbelow": True,
    # Names and reasons are text, never TeX: "$5 model" stays "$5 model".
    "text.parse_math": False,
    # Deterministic SVG: fixed ids, glyphs as paths (no fonts needed to view it).
    "svg.hashsalt": "localbench",
    "svg.fonttype": "path",
}
# One colour per machine in the cross-machine chart (Tableau 10).
PROFILE_COLOURS = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d",
)  # fmt: skip
FORMATS = ("png", "svg")


@dataclass(frozen=True)
class Spread:
    """A metric's median and the 10th to 90th percentile of its raw samples."""

    median: float
    p10: float
    p90: float
    count: int

    def scaled(self, factor: float) -> Spread:
        """The same spread in another unit (``factor`` times every figure)."""
        return Spread(self.median * factor, self.p10 * factor, self.p90 * factor, self.count)


def spread(measurement: object) -> Spread | None:
    """The :class:`Spread` of a result's metric (``{"median", "values", ...}``), from its
    raw samples; None when the metric is missing."""
    if not isinstance(measurement, dict) or measurement.get("median") is None:
        return None
    median = float(measurement["median"])
    values = [float(v) for v in measurement.get("values") or [] if math.isfinite(float(v))]
    if not values:
        return Spread(median, median, median, int(measurement.get("count") or 0))
    return Spread(median, percentile(values, 10), percentile(values, 90), len(values))


@dataclass(frozen=True)
class ChartRow:
    """One result (a model with one backend) as the charts show it."""

    model: str
    display_name: str
    synthetic: bool
    backend: str
    task: str
    measured: bool
    status: str
    decode: Spread | None
    ttft: Spread | None
    peak_gb: float | None
    roofline: dict | None

    @property
    def label(self) -> str:
        """The model's tick label: its display name, and a second line for random weights."""
        return self.display_name + ("\nsynthetic weights" if self.synthetic else "")


def chart_row(result: dict, display_names: dict[str, str]) -> ChartRow:
    """The chart view of one result file."""
    measured = result["status"] == MEASURED
    metrics = result.get("metrics") or {}
    status = STATUS_LABELS.get(result["status"], result["status"])
    if not measured:
        reason = " ".join(str(result.get("reason") or "no reason recorded").split())
        status = f"{status}: {reason}"
        if len(status) > REASON_LENGTH:
            status = status[: REASON_LENGTH - 1] + "\u2026"
    peak = (result.get("memory") or {}).get("peak_bytes")
    roofline = result.get("roofline")
    return ChartRow(
        model=result["model"],
        display_name=display_names.get(result["model"]) or result["model"],
        synthetic=weights_label(result).startswith("synthetic"),
        backend=result.get("backend_requested", "eager"),
        task=result["task"],
        measured=measured,
        status=status,
        decode=spread(metrics.get("decode_tokens_per_s")) if measured else None,
        ttft=spread(metrics.get("ttft_ms")) if measured else None,
        peak_gb=peak / GB if measured and peak else None,
        roofline=roofline if measured and isinstance(roofline, dict) else None,
    )


def chart_rows(results: Iterable[dict], display_names: dict[str, str]) -> list[ChartRow]:
    """Every result as a :class:`ChartRow`, in the order given (config order)."""
    return [chart_row(result, display_names) for result in results]


def grouped(rows: Iterable[ChartRow]) -> list[tuple[str, list[ChartRow]]]:
    """Rows grouped by model, first appearance first: (tick label, rows of its backends)."""
    groups: dict[str, tuple[str, list[ChartRow]]] = {}
    for row in rows:
        groups.setdefault(row.model, (row.label, []))[1].append(row)
    return list(groups.values())


def _backends(groups: list[tuple[str, list[ChartRow]]]) -> list[str]:
    order = list(BACKEND_COLOURS)
    found = {row.backend for _label, rows in groups for row in rows}
    return sorted(found, key=lambda b: (order.index(b) if b in order else len(order), b))


def _colour(backend: str) -> str:
    return BACKEND_COLOURS.get(backend, OTHER_COLOUR)


def number(value: float) -> str:
    """A figure with the digits it deserves: 1234, 123, 12.3, 1.23, 0.0123."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _bar_panel(
    ax,
    groups: list[tuple[str, list[ChartRow]]],
    value: Callable[[ChartRow], Spread | None],
    text: Callable[[ChartRow, Spread], str],
    title: str,
    xlabel: str,
    floor: float = 0.0,
) -> float:
    """Horizontal bars, one band per model and one bar per backend, median with a
    10th-90th percentile whisker and its figure at the end; a row that has no value
    shows its status instead. Returns the largest figure drawn (for the axis)."""
    backends = _backends(groups)
    # A band holds two bars' room even for one backend: a lone bar stays a bar, not a block.
    height = 0.8 / max(2, len(backends))
    top = floor
    notes = []
    for index, (_label, rows) in enumerate(groups):
        for row in rows:
            slot = backends.index(row.backend) + 0.5
            y = index + height * (slot - len(backends) / 2)
            figure = value(row)
            if figure is None:
                why = row.status if not row.measured else "not recorded"
                notes.append((y, f"{row.backend}: {why}"))
                continue
            ax.barh(y, figure.median, height=height * 0.85, color=_colour(row.backend))
            if figure.p90 > figure.p10:
                ax.errorbar(
                    figure.median,
                    y,
                    xerr=[[figure.median - figure.p10], [figure.p90 - figure.median]],
                    fmt="none",
                    ecolor="#222222",
                    elinewidth=1,
                    capsize=2.5,
                )
            ax.annotate(
                text(row, figure),
                (max(figure.p90, figure.median), y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
            top = max(top, figure.p90, figure.median)
    # Room at the right for the figures written after the bars.
    limit = top * 1.3 if top > 0 else 1.0
    ax.set_xlim(0, limit)
    for y, note in notes:
        ax.text(
            limit * 0.01,
            y,
            note,
            va="center",
            fontsize=8,
            style="italic",
            color=NOT_MEASURED_COLOUR,
            clip_on=True,
        )
    ax.set_yticks(range(len(groups)), [label for label, _rows in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_title(title, loc="left")
    ax.set_xlabel(xlabel)
    ax.tick_params(axis="y", length=0)
    return top


def _legend(fig, groups, extra: list = ()) -> None:
    handles = [Patch(color=_colour(b), label=f"{b} backend") for b in _backends(groups)]
    if not handles and not extra:
        return
    fig.legend(
        handles=handles + list(extra),
        loc="outside lower center",
        ncols=min(3, len(handles) + len(extra)),
        frameon=False,
        fontsize=8,
    )


def _figure(groups: list[tuple[str, list[ChartRow]]]) -> Figure:
    bars = sum(len(rows) for _label, rows in groups)
    height = 1.7 + 0.3 * bars + 0.2 * len(groups)
    fig = Figure(figsize=(FIGURE_WIDTH_IN, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _runs_text(rows: Iterable[ChartRow], attribute: str) -> str:
    counts = sorted({getattr(r, attribute).count for r in rows if getattr(r, attribute)})
    if not counts:
        return "no measured runs"
    runs = "/".join(str(c) for c in counts)
    return f"median of {runs} measured runs; whiskers: 10th to 90th percentile"


def speed_figure(rows: list[ChartRow], task: str, profile: str) -> Figure:
    """Decode speed and time to first token of one task's models, side by side."""
    groups = grouped(r for r in rows if r.task == task)
    fig = _figure(groups)
    decode_ax, ttft_ax = fig.subplots(1, 2, sharey=True)
    task_rows = [r for _label, rs in groups for r in rs]
    _bar_panel(
        decode_ax,
        groups,
        lambda r: r.decode,
        lambda _r, s: number(s.median),
        "Decode speed (first token excluded)",
        "tokens/s, higher is faster",
    )
    _bar_panel(
        ttft_ax,
        groups,
        lambda r: r.ttft,
        lambda _r, s: f"{number(s.median)} ms",
        "Time to first token (prefill included)",
        "milliseconds, lower is faster",
    )
    ttft_ax.tick_params(axis="y", labelleft=False)
    fig.suptitle(
        f"{TASK_LABELS.get(task, task)} on {profile}: {_runs_text(task_rows, 'decode')}",
        x=0.01,
        ha="left",
        wrap=True,
    )
    _legend(fig, groups)
    return fig


def memory_figure(rows: list[ChartRow], profile: str) -> Figure:
    """Peak memory of every model and backend, against the 16 / 24 / 32 GB tiers."""
    groups = grouped(rows)
    fig = _figure(groups)
    ax = fig.subplots()

    def peak(row: ChartRow) -> Spread | None:
        return None if row.peak_gb is None else Spread(row.peak_gb, row.peak_gb, row.peak_gb, 1)

    _bar_panel(
        ax,
        groups,
        peak,
        lambda _r, s: f"{s.median:.2f} GB",
        "",
        "GB (10^9 bytes) during the measured runs",
        floor=TIERS_GB[-1] / 1.3 * 1.05,
    )
    tiers = []
    for tier, colour in zip(TIERS_GB, TIER_COLOURS, strict=True):
        ax.axvline(tier, color=colour, linewidth=1.2)
        # The share of the tier kept for the system and applications.
        ax.axvspan(tier * TIER_SHARE, tier, color=colour, alpha=0.12, linewidth=0)
        ax.text(
            tier,
            1.0,
            f"{tier} GB",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color=colour,
        )
        tiers.append(
            Patch(
                color=colour,
                label=f"{tier} GB machine (shaded: above the {tier * TIER_SHARE:g} GB a "
                "model may use)",
            )
        )
    fig.suptitle(
        f"Peak memory on {profile}: a machine holds a model at up to {TIER_SHARE:.0%} "
        "of its memory",
        x=0.01,
        ha="left",
        wrap=True,
    )
    _legend(fig, groups, tiers)
    return fig


def roofline_figure(rows: list[ChartRow], profile: str) -> Figure:
    """Bytes read per second while decoding (decode rate times bytes read per token),
    against the machine's measured read bandwidth: the decode roofline."""
    groups = grouped(r for r in rows if r.task == ROOFLINE_TASK)
    bandwidths = sorted(
        {r.roofline["bandwidth_gb_per_s"] for _l, rs in groups for r in rs if r.roofline}
    )
    fig = _figure(groups)
    ax = fig.subplots()

    def achieved(row: ChartRow) -> Spread | None:
        if row.decode is None or not row.roofline:
            return None
        return row.decode.scaled(row.roofline["bytes_per_token"] / GB)

    def text(row: ChartRow, figure: Spread) -> str:
        percent = row.roofline.get("decode_percent_of_roofline")
        share = f", {percent:.0f}% of roofline" if percent is not None else ""
        return f"{number(figure.median)} GB/s{share}"

    _bar_panel(
        ax,
        groups,
        achieved,
        text,
        "Bytes read per second while decoding = decode rate \u00d7 bytes read per token",
        "GB/s",
        floor=(bandwidths[-1] if bandwidths else 0.0) * 1.1,
    )
    extra = []
    for bandwidth in bandwidths:
        ax.axvline(bandwidth, color="#222222", linestyle="--", linewidth=1.2)
    if bandwidths:
        shown = " / ".join(f"{b:.1f}" for b in bandwidths)
        extra.append(
            Patch(
                facecolor="none",
                edgecolor="#222222",
                linestyle="--",
                label=f"measured read bandwidth: {shown} GB/s (100% of roofline)",
            )
        )
    runs = _runs_text([r for _label, rs in groups for r in rs], "decode")
    fig.suptitle(
        f"Decode roofline on {profile}: {runs}",
        x=0.01,
        ha="left",
        wrap=True,
    )
    _legend(fig, groups, extra)
    return fig


def throughput_figure(records: list[dict], display_names: dict[str, str], profile: str) -> Figure:
    """Aggregate decode rate against batch size, one line per model and backend (measured
    points only), with each model's bandwidth limit at every batch size dashed."""
    lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
    limits: dict[str, list[tuple[int, float]]] = {}
    synthetic: dict[str, bool] = {}
    for record in records:
        if record.get("status") != MEASURED:
            continue
        batch = record["inputs"]["batch_size"]
        name = display_names.get(record["model"]) or record["model"]
        synthetic[name] = bool(record.get("synthetic"))
        backend = (record.get("backend") or {}).get("used") or "eager"
        aggregate = record["metrics"]["aggregate_tokens_per_s"]["median"]
        lines.setdefault((name, backend), []).append((batch, aggregate))
        if record.get("limit"):
            limits.setdefault(name, []).append((batch, record["limit"]["tokens_per_s"]))
    fig = Figure(figsize=(FIGURE_WIDTH_IN, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(True, which="major", axis="both")
    markers = "osD^v<>"
    names = list(dict.fromkeys(name for name, _backend in lines))
    for (name, backend), points in lines.items():
        points.sort()
        label = f"{name}{' (synthetic weights)' if synthetic[name] else ''}, {backend}"
        ax.plot(
            [b for b, _ in points],
            [v for _, v in points],
            marker=markers[names.index(name) % len(markers)],
            color=_colour(backend),
            label=label,
        )
        for batch, value in points:
            ax.annotate(
                number(value), (batch, value), textcoords="offset points", xytext=(4, 4),
                fontsize=8,
            )  # fmt: skip
    for name, points in limits.items():
        points = sorted(set(points))
        ax.plot(
            [b for b, _ in points],
            [v for _, v in points],
            linestyle="--",
            color="#222222",
            linewidth=1.0,
            marker=markers[names.index(name) % len(markers)] if name in names else None,
            markerfacecolor="none",
            label=f"{name}: bandwidth limit (weights read once per step, cache per sequence)",
        )
    batches = sorted({b for points in lines.values() for b, _ in points})
    if batches:
        ax.set_xticks(batches, [str(b) for b in batches])
    # Plain numbers on the log axis (the style keeps text out of TeX, so no 10^k labels).
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: number(value)))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sequences decoded together (batch size)")
    ax.set_ylabel("aggregate tokens/s (log scale)")
    if not lines:
        ax.text(0.5, 0.5, "no throughput point was measured", ha="center", transform=ax.transAxes)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.suptitle(
        f"What batching buys on {profile}: aggregate decode rate (median of the runs)",
        x=0.01,
        ha="left",
    )
    return fig


def render_throughput_chart(
    records: list[dict], display_names: dict[str, str], profile: str, folder: str | Path
) -> list[Path]:
    """Write the throughput chart into ``folder`` as PNG and SVG; return the paths."""
    written = []
    with rc_context(STYLE):
        fig = throughput_figure(records, display_names, profile)
        for fmt in FORMATS:
            path = Path(folder) / f"{THROUGHPUT_CHART}.{fmt}"
            write_bytes(path, figure_bytes(fig, fmt))
            written.append(path)
    return written


def comparison_figure(lines: list[dict], profiles: list[str]) -> Figure:
    """Each task's speed on each machine: one panel per task (its own unit and axis),
    one group of bars per model and backend, one bar per profile that measured it."""
    tasks = list(dict.fromkeys(line["task"] for line in lines))
    heights = [max(1, len([x for x in lines if x["task"] == t])) for t in tasks] or [1]
    rows_total = sum(heights)
    fig = Figure(
        figsize=(FIGURE_WIDTH_IN, 1.4 + 0.28 * rows_total * max(1, len(profiles))),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    if not tasks:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no measured model to compare", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    axes = fig.subplots(len(tasks), 1, height_ratios=heights, squeeze=False)[:, 0]
    bar = 0.8 / max(1, len(profiles))
    for ax, task in zip(axes, tasks, strict=True):
        task_lines = [x for x in lines if x["task"] == task]
        unit = task_lines[0]["unit"]
        labels = []
        for row, line in enumerate(task_lines):
            labels.append(f"{line['model']} ({line['backend']})")
            for index, entry in enumerate(line["entries"]):
                cell = entry["cell"]
                if not cell or cell["speed"] is None:
                    continue
                y = row + (index - (len(profiles) - 1) / 2) * bar
                colour = PROFILE_COLOURS[index % len(PROFILE_COLOURS)]
                ax.barh(y, cell["speed"], height=bar * 0.9, color=colour)
                synthetic = " syn." if cell.get("synthetic") else ""
                text = f"{cell['bound']}{number(cell['speed'])}{synthetic}"
                ax.annotate(
                    text, (cell["speed"], y), textcoords="offset points", xytext=(3, -3),
                    fontsize=7,
                )  # fmt: skip
        ax.set_yticks(range(len(task_lines)), labels)
        ax.invert_yaxis()
        ax.set_title(f"{TASK_LABELS.get(task, task)}: {unit}", loc="left")
    handles = [
        Patch(color=PROFILE_COLOURS[i % len(PROFILE_COLOURS)], label=profile)
        for i, profile in enumerate(profiles)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)))
    fig.suptitle(
        "Each model's speed on each machine (medians; syn.: synthetic weights)",
        x=0.01,
        ha="left",
    )
    return fig


def render_comparison_chart(context: dict, png: str | Path, svg: str | Path) -> None:
    """Write the cross-machine chart of a comparison context as PNG and SVG."""
    with rc_context(STYLE):
        fig = comparison_figure(context["lines"], context["profiles"])
        write_bytes(png, figure_bytes(fig, "png"))
        write_bytes(svg, figure_bytes(fig, "svg"))


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes, with no date in them."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata, facecolor="white")
    return buffer.getvalue()


def render_charts(
    results: list[dict],
    display_names: dict[str, str],
    profile: str,
    tasks: Iterable[str],
    folder: str | Path,
) -> list[Path]:
    """Write the charts of :func:`chart_names` (``tasks``: the configured models' tasks)
    into ``folder`` as PNG and SVG, each atomically; return the paths written."""
    rows = chart_rows(results, display_names)
    tasks = list(dict.fromkeys(tasks))
    drawings = {SPEED_CHART.format(task=task): partial(speed_figure, task=task) for task in tasks}
    drawings[MEMORY_CHART] = memory_figure
    drawings[ROOFLINE_CHART] = roofline_figure
    written = []
    with rc_context(STYLE):
        for name in chart_names(tasks):
            fig = drawings[name](rows, profile=profile)
            for fmt in FORMATS:
                path = Path(folder) / f"{name}.{fmt}"
                write_bytes(path, figure_bytes(fig, fmt))
                written.append(path)
    return written

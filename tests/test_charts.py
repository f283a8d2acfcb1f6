"""The charts: files, what they show and what they never show, from result records."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ElementTree
import zlib

import pytest
from localbench.report.chart_names import (
    MEMORY_CHART,
    ROOFLINE_CHART,
    chart_links,
    chart_names,
)
from localbench.report.charts import (
    chart_rows as rows_of,
)
from localbench.report.charts import (
    memory_figure,
    render_charts,
    roofline_figure,
    speed_figure,
    spread,
)
from matplotlib.patches import Rectangle

NAMES = {"qwen": "Qwen 2.5 1.5B", "blip": "BLIP base", "vl2": "DeepSeek-VL2-Small"}


def _metric(values, unit="x"):
    ordered = sorted(values)
    return {
        "median": ordered[len(ordered) // 2],
        "p90": ordered[-1],
        "values": values,
        "unit": unit,
    }


def _result(model, task, backend, decode, ttft, peak_gb, synthetic=True, roofline=None):
    return {
        "model": model,
        "task": task,
        "backend_requested": backend,
        "status": "measured",
        "synthetic": synthetic,
        "metrics": {"decode_tokens_per_s": _metric(decode), "ttft_ms": _metric(ttft)},
        "memory": {"peak_bytes": int(peak_gb * 1e9)},
        "roofline": roofline,
    }


ROOFLINE = {"bandwidth_gb_per_s": 30.0, "bytes_per_token": 3e9, "decode_percent_of_roofline": 80.0}
RESULTS = [
    _result("qwen", "text-generation", "eager", [5.0, 5.2, 5.4], [900, 950, 990], 3.7,
            roofline={**ROOFLINE, "decode_percent_of_roofline": 51.0}),
    _result("qwen", "text-generation", "fast", [8.0, 8.1, 8.3], [500, 520, 560], 3.7,
            roofline=ROOFLINE),
    _result("blip", "image-captioning", "eager", [40.0, 41.0, 44.0], [90, 95, 99], 1.1,
            synthetic=False),
    {
        "model": "vl2",
        "task": "multimodal",
        "backend_requested": "eager",
        "status": "skipped",
        "reason": "needs ~36 GB, 24 GB available",
        "synthetic": True,
    },
]  # fmt: skip
TASKS = ["text-generation", "image-captioning", "multimodal"]


def _axes_bars(ax) -> list[Rectangle]:
    """The bars drawn in one panel (not the shaded tiers, which span the whole height)."""
    return [
        p
        for p in ax.patches
        if isinstance(p, Rectangle) and p.get_height() < 1 and p.get_width() > 0
    ]


def _bars(fig) -> list[Rectangle]:
    return [bar for ax in fig.axes for bar in _axes_bars(ax)]


def _texts(fig) -> str:
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    texts += [label.get_text() for ax in fig.axes for label in ax.get_yticklabels()]
    texts += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    return "\n".join(texts)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    header = data[16:29]
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    return struct.unpack(">II", header[:8])


def test_spread_takes_the_10th_and_90th_percentile_of_the_raw_samples():
    measured = spread({"median": 3.0, "values": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert (measured.median, measured.p10, measured.p90, measured.count) == (3.0, 1.4, 4.6, 5)
    assert spread(None) is None and spread({"median": None}) is None


def test_one_speed_chart_per_task_then_memory_and_the_roofline():
    assert chart_names(TASKS) == [
        "speed-text-generation",
        "speed-image-captioning",
        "speed-multimodal",
        MEMORY_CHART,
        ROOFLINE_CHART,
    ]
    # No text-generation model: no roofline to draw.
    assert ROOFLINE_CHART not in chart_names(["image-captioning", "speech-recognition"])


def test_chart_files_are_valid_png_and_svg_and_the_same_on_every_run(tmp_path):
    written = render_charts(RESULTS, NAMES, "test-machine", TASKS, tmp_path / "a")
    again = render_charts(RESULTS, NAMES, "test-machine", TASKS, tmp_path / "b")
    names = sorted(p.name for p in written)
    assert names == sorted(f"{n}.{f}" for n in chart_names(TASKS) for f in ("png", "svg"))
    for path in written:
        data = path.read_bytes()
        assert data == (tmp_path / "b" / path.name).read_bytes(), path.name
        if path.suffix == ".png":
            width, height = _png_size(data)
            assert width >= 1000 and height >= 300 and len(data) > 20_000, path.name
        else:
            root = ElementTree.fromstring(data)
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
            assert b"<dc:date>" not in data  # no date: the same results give the same file
    assert len(again) == len(written)


def test_each_task_is_its_own_chart_and_a_bar_per_measured_backend():
    rows = rows_of(RESULTS, NAMES)
    text = speed_figure(rows, task="text-generation", profile="p")
    # Two backends of one model, in two panels (decode speed, time to first token).
    assert len(_bars(text)) == 4
    assert "BLIP base" not in _texts(text)  # another task's tokens/s never share an axis
    widths = sorted(round(bar.get_width(), 3) for bar in _axes_bars(text.axes[0]))
    assert widths == [5.2, 8.1]  # medians, from the result files
    captioning = speed_figure(rows, task="image-captioning", profile="p")
    assert len(_bars(captioning)) == 2 and "Qwen" not in _texts(captioning)


def test_synthetic_weights_are_said_and_real_ones_are_not():
    rows = rows_of(RESULTS, NAMES)
    text = _texts(speed_figure(rows, task="text-generation", profile="p"))
    assert "Qwen 2.5 1.5B\nsynthetic weights" in text
    captioning = _texts(speed_figure(rows, task="image-captioning", profile="p"))
    assert "BLIP base" in captioning and "synthetic" not in captioning


def test_a_skipped_model_shows_its_reason_and_never_a_bar():
    rows = rows_of(RESULTS, NAMES)
    multimodal = speed_figure(rows, task="multimodal", profile="p")
    assert _bars(multimodal) == []
    assert "skipped: needs ~36 GB, 24 GB available" in _texts(multimodal)
    memory = memory_figure(rows, profile="p")
    assert len(_bars(memory)) == 3  # the three measured results, not the skipped one
    text = _texts(memory)
    assert "DeepSeek-VL2-Small" in text and "skipped: needs ~36 GB" in text
    for tier in ("16 GB", "24 GB", "32 GB"):
        assert tier in text


def test_roofline_is_bytes_read_per_second_against_the_measured_bandwidth():
    fig = roofline_figure(rows_of(RESULTS, NAMES), profile="p")
    # decode rate x bytes per token: 5.2 tokens/s x 3 GB = 15.6 GB/s; 8.1 x 3 = 24.3.
    widths = sorted(round(bar.get_width(), 6) for bar in _bars(fig))
    assert widths == pytest.approx([15.6, 24.3])
    lines = [
        line.get_xdata()[0] for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"
    ]
    assert lines == [30.0]
    text = _texts(fig)
    assert "80% of roofline" in text and "51% of roofline" in text and "30.0 GB/s" in text


def test_names_are_text_never_mathtext(tmp_path):
    results = [{**RESULTS[2], "model": "odd"}]
    names = {"odd": "Model $5 for $x^2$ \\frac"}
    written = render_charts(results, names, "p", ["image-captioning"], tmp_path)
    assert all(p.stat().st_size > 0 for p in written)


def test_chart_links_place_each_chart_in_its_section():
    links = chart_links(
        ["charts/speed-text-generation.png", "charts/peak-memory.png", "charts/decode-roofline.png"]
    )
    assert links["speed"]["text-generation"]["path"] == "charts/speed-text-generation.png"
    assert links["memory"]["title"].startswith("Peak memory")
    assert links["roofline"]["path"] == "charts/decode-roofline.png"

"""A dependency-free SVG chart: generation speed and peak memory per measured model."""

from __future__ import annotations

from html import escape

BAR_HEIGHT = 18
GAP = 8
LABEL_WIDTH = 330
PANEL_WIDTH = 300
VALUE_WIDTH = 90


def _panel(x0: float, title: str, rows: list[tuple[str, float | None, str]], width: int) -> str:
    values = [v for _, v, _ in rows if v is not None]
    top = max(values) if values else 1.0
    parts = [f'<text x="{x0}" y="16" font-weight="bold">{escape(title)}</text>']
    for i, (_label, value, text) in enumerate(rows):
        y = 28 + i * (BAR_HEIGHT + GAP)
        if value is not None and top > 0:
            length = max(1.0, width * value / top)
            parts.append(
                f'<rect x="{x0}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" '
                'fill="#4c78a8"/>'
            )
        parts.append(f'<text x="{x0 + 4}" y="{y + 13}" fill="#222">{escape(text)}</text>')
    return "\n".join(parts)


def render_chart(rows: list[dict]) -> str:
    """SVG of ``rows`` ({label, tokens_per_s, memory_gb}); bars scale to each panel's max."""
    height = 40 + max(1, len(rows)) * (BAR_HEIGHT + GAP)
    width = LABEL_WIDTH + 2 * (PANEL_WIDTH + VALUE_WIDTH)
    labels = []
    for i, row in enumerate(rows):
        y = 28 + i * (BAR_HEIGHT + GAP) + 13
        labels.append(f'<text x="4" y="{y}">{escape(row["label"])}</text>')
    speed = [
        (
            r["label"],
            r["tokens_per_s"],
            "" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}",
        )
        for r in rows
    ]
    memory = [
        (r["label"], r["memory_gb"], "" if r["memory_gb"] is None else f"{r['memory_gb']:.2f} GB")
        for r in rows
    ]
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'font-family="sans-serif" font-size="12">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            *labels,
            _panel(
                LABEL_WIDTH, "Generated tokens/s (median, first token excluded)", speed, PANEL_WIDTH
            ),
            _panel(
                LABEL_WIDTH + PANEL_WIDTH + VALUE_WIDTH, "Peak memory (GB)", memory, PANEL_WIDTH
            ),
            "</svg>",
        ]
    )

"""Markdown reports as self-contained HTML pages: tables, embedded charts, nothing else."""

from __future__ import annotations

import base64
import os

from localbench.report.pages import html_page, image_data_uri, markdown_to_html

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def test_tables_and_escaped_text_become_html_and_raw_html_never_does(tmp_path):
    markdown = (
        "# Title\n\n| Model | Speed |\n|---|--:|\n| **Qwen 2.5** | 8.0 |\n\n<script>x</script>\n"
    )
    body = markdown_to_html(markdown)
    assert "<table>" in body and "<strong>Qwen 2.5</strong>" in body
    assert "<script>" not in body and "&lt;script&gt;" in body
    page = html_page(markdown, "Summary <of> things")
    assert page.startswith("<!doctype html>") and "<title>Summary &lt;of&gt; things</title>" in page


def test_linked_charts_inside_the_folder_are_embedded(tmp_path):
    (tmp_path / "charts").mkdir()
    (tmp_path / "charts" / "speed.png").write_bytes(PNG)
    body = markdown_to_html("![Decode speed](charts/speed.png)\n", tmp_path)
    encoded = base64.b64encode(PNG).decode()
    assert f'src="data:image/png;base64,{encoded}"' in body and 'alt="Decode speed"' in body


def test_nothing_outside_the_folder_or_not_a_chart_is_embedded(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (tmp_path / "secret.png").write_bytes(PNG)
    (folder / "notes.txt").write_text("x")
    os.symlink(tmp_path / "secret.png", folder / "link.png")
    for source in ("../secret.png", str(tmp_path / "secret.png"), "link.png", "notes.txt",
                   "missing.png", "https://example.com/a.png"):  # fmt: skip
        assert image_data_uri(folder, source) is None, source
        assert "data:" not in markdown_to_html(f"![x]({source})\n", folder), source

"""Markdown reports as self-contained HTML pages, for the HTML report of ``snakemake --report``.

The summary, the comparison and the pipeline reports are written in Markdown; each is
also written as one HTML file from the same Markdown, with the charts it links embedded
(a data URI per image), so that the page shows everything when the report opens it from
inside one HTML file. Raw HTML in the Markdown is not passed through (every outside
string is escaped before it reaches the Markdown anyway, see ``summary.md``), and only
PNG and SVG files inside the page's own folder are embedded.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML

IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
# A chart is a few hundred KB; anything far larger is not one of ours.
MAX_IMAGE_BYTES = 8 * 1024 * 1024

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0 auto; padding: 1.5rem 2rem 3rem; max-width: 1500px; color: #1f2328;
  line-height: 1.5; font-size: 15px; }
h1 { font-size: 1.8rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.4rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem;
  margin-top: 2.2rem; }
h3 { font-size: 1.15rem; margin-top: 1.8rem; }
table { border-collapse: collapse; display: block; overflow-x: auto; max-width: 100%;
  font-size: 13px; margin: .8rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; vertical-align: top; }
th { background: #f6f8fa; text-align: left; white-space: nowrap; }
tr:nth-child(2n) td { background: #fbfcfd; }
/* One line per row, the table scrolls instead; the last column (notes, reasons) wraps. */
td { white-space: nowrap; }
td:last-child { white-space: normal; min-width: 16rem; }
code { background: #f6f8fa; padding: .1rem .3rem; border-radius: 4px; font-size: 90%; }
img { max-width: 100%; height: auto; display: block; margin: 1rem 0;
  border: 1px solid #eaeef2; }
"""


def _markdown() -> MarkdownIt:
    # CommonMark with GitHub's tables; raw HTML is shown as text, never passed through.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def image_data_uri(folder: Path, source: str) -> str | None:
    """``source`` (a relative link of the page) as a data URI when it names a PNG or SVG
    file inside ``folder``, reached through no link; None otherwise."""
    relative = Path(source)
    if not source or "://" in source or relative.is_absolute() or ".." in relative.parts:
        return None
    mime = IMAGE_TYPES.get(relative.suffix.lower())
    path = folder / relative
    try:
        inside = path.resolve().relative_to(folder.resolve()) == relative
        if not mime or not inside or not path.is_file():
            return None
        if path.stat().st_size > MAX_IMAGE_BYTES:
            return None
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def markdown_to_html(markdown: str, folder: str | os.PathLike | None = None) -> str:
    """The HTML body of ``markdown``; with ``folder`` (where the Markdown file lives), its
    images are embedded as data URIs (:func:`image_data_uri`)."""
    parser = _markdown()
    if folder is not None:
        base = Path(folder)

        def image(renderer, tokens, index, options, env):
            token = tokens[index]
            embedded = image_data_uri(base, str(token.attrGet("src") or ""))
            if embedded:
                token.attrSet("src", embedded)
            return RendererHTML.image(renderer, tokens, index, options, env)

        parser.add_render_rule("image", image)
    return parser.render(markdown)


def html_page(markdown: str, title: str, folder: str | os.PathLike | None = None) -> str:
    """A complete HTML document of ``markdown`` with its images embedded."""
    body = markdown_to_html(markdown, folder)
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )

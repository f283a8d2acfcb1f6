"""Screenshots of an HTML report (``snakemake --report``) with headless Chromium, for the docs.

The report is one page whose views are chosen by clicking; each shot here opens a copy of
the report with a line of script that selects its view (a category, a result), then
Chromium writes the screenshot. The report itself is not changed.

    python benchmarks/screenshot_report.py results/<profile>/report.html docs/images

Needs ``chromium`` (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# name: (window width, height, script run once the report has loaded)
SHOTS = {
    "report-front-page": (1400, 900, ""),
    "report-summary-list": (1400, 700, 'app.showCategory("1. Summary");'),
    "report-summary-page": (
        1400,
        1800,
        'showResult("SUMMARY.html");',
    ),
    "report-chart": (1400, 1000, 'showResult("speed-text-generation.png");'),
    "report-model-results": (1400, 800, 'app.showCategory("3. Model results");'),
}
HELPERS = """
function showResult(name) {
  const path = Object.keys(results).find((p) => p.endsWith("/" + name));
  const entry = results[path];
  const kind = entry.mime_type.startsWith("image/") ? "img" : "html";
  app.setView({content: kind, contentPath: entry.data_uri, resultPath: path});
}
"""


def shoot(report: Path, out: Path, chromium: str) -> list[Path]:
    """Write one PNG per view of :data:`SHOTS` into ``out``."""
    html = report.read_text(encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as folder:
        for name, (width, height, script) in SHOTS.items():
            page = Path(folder) / f"{name}.html"
            select = (
                f"<script>{HELPERS}window.addEventListener('load', () => "
                f"setTimeout(() => {{ {script} }}, 200));</script>"
            )
            # The last </body>: the report's scripts hold the string too.
            head, _tag, tail = html.rpartition("</body>")
            page.write_text(head + select + "</body>" + tail, encoding="utf-8")
            target = out / f"{name}.png"
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--virtual-time-budget=10000",
                    f"--window-size={width},{height}",
                    f"--screenshot={target}",
                    page.as_uri(),
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            written.append(target)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report.html to photograph")
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("screenshot_report: no chromium on the PATH", file=sys.stderr)
        return 1
    for path in shoot(args.report, args.out, chromium):
        print(json.dumps(str(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reporting: aggregating results, the Markdown summary and its charts, the comparison
across machines and over time, archives and the HTML pages."""

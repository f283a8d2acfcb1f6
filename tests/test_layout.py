"""The library's layout: folders by concern, and no import circles between modules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "workflow" / "localbench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each library module and the library modules it imports anywhere in its body
    (function-level and type-checking imports included: a circle is a circle)."""
    modules = {_module_name(path): path for path in LIBRARY.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("localbench"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    graph[name].add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.startswith("localbench"))
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert _circles(_imports()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_folders_say_where_a_model_is_fetched_run_measured_and_reported():
    folders = {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file()}
    assert {"fetch", "engine", "measure", "report", "pipelines"} <= folders
    # Only shared records and settings, and the run's own housekeeping, stay at the top.
    top = {p.stem for p in LIBRARY.glob("*.py")} - {"__init__"}
    assert top <= {
        "config", "config_files", "status", "results", "atomic", "locks", "logs",
        "scheduler_timers",
    }  # fmt: skip


def imported_after(modules: list[str], heavy: list[str]) -> list[str]:
    """Which of the ``heavy`` packages a fresh interpreter holds after importing
    ``modules``."""
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        f"print(' '.join(h for h in {heavy!r} if h in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(LIBRARY.parent)}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return completed.stdout.split()


def test_reporting_never_imports_torch():
    """Report jobs (summary, charts, comparison, pipeline reports) read records and
    write pages: starting torch would add seconds to each (4 s on an H200 machine)."""
    modules = [
        "localbench.pipelines.report",
        "localbench.report.aggregate",
        "localbench.report.archive",
        "localbench.report.archive_reader",
        "localbench.report.charts",
        "localbench.report.compare",
        "localbench.report.pages",
        "localbench.report.peers",
        "localbench.report.summary",
    ]
    assert imported_after(modules, ["torch"]) == []


def test_chart_names_draw_nothing():
    """Every snakemake command plans with the chart names: matplotlib is for the jobs
    that draw (half a second a command on this project's CPU)."""
    assert imported_after(["localbench.report.chart_names"], ["matplotlib", "torch"]) == []

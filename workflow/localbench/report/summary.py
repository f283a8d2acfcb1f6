"""The Markdown summary: the seed report's sections, every figure from this run's results.

This module turns result records into plain rows and sentences; the layout lives in the
Jinja2 template ``workflow/templates/summary.md.j2``.
"""

from __future__ import annotations

import html
import re
import unicodedata
from pathlib import Path

import jinja2

from localbench.measure.roofline import roofline_bandwidth
from localbench.report.peers import peer_table
from localbench.results import MEASURED, NOT_AVAILABLE, STATUS_LABELS, now_utc

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
GB = 1e9
CATEGORIES = {
    "text-generation": "Text Generation Models",
    "image-captioning": "Vision-Language Models",
    "visual-question-answering": "Vision-Language Models",
    "multimodal": "Vision-Language Models",
    "speech-recognition": "Speech Recognition",
}
TASK_LABELS = {
    "text-generation": "Text generation",
    "image-captioning": "Image captioning",
    "visual-question-answering": "Visual QA",
    "multimodal": "Multimodal",
    "speech-recognition": "Speech recognition",
}
# A memory tier can hold a model when its peak memory leaves a quarter of the tier for
# the operating system and the user's applications.
TIERS_GB = (16, 24, 32)
TIER_SHARE = 0.75


# Markdown's inline markup and table separator, backslash first so that the backslashes
# added for the others are not escaped again.
MARKDOWN_SPECIALS = "\\`*_[]|#~"
# What starts a block when it opens a line: a list item ("- x", "+ x"), a thematic break
# or setext underline ("---", "==="), an ordered list item ("1. x", "1) x").
BULLET_OR_RULE = re.compile(r"^(?:[-+](?= |$)|-+$|=+$)")
ORDERED_ITEM = re.compile(r"^(\d{1,9})([.)])(?= |$)")


def md(text: object) -> str:
    """Escape outside text (names, reasons, output) for Markdown and the HTML it becomes:
    one line, no table breaks, no markup, no block start; ``<``, ``>`` and ``&`` as HTML
    entities, which Markdown shows literally; control characters and undecodable bytes as
    U+FFFD. The one escape of the project: every template's ``md`` filter."""
    value = "" if text is None else str(text)
    value = " ".join(value.split())
    value = "".join(
        "\ufffd" if unicodedata.category(char) in ("Cc", "Cs") else char for char in value
    )
    value = html.escape(value, quote=False)
    for char in MARKDOWN_SPECIALS:
        value = value.replace(char, "\\" + char)
    if BULLET_OR_RULE.match(value):
        value = "\\" + value
    return ORDERED_ITEM.sub(r"\1\\\2", value)


def _metric(result: dict, metric: str) -> dict | None:
    value = (result.get("metrics") or {}).get(metric)
    return value if isinstance(value, dict) else None


def _median(result: dict, metric: str) -> float | None:
    return (_metric(result, metric) or {}).get("median")


def _params(count: int | None) -> str:
    if not count:
        return "n/a"
    if count >= 1e9:
        return f"{count / 1e9:.2f}B"
    return f"{count / 1e6:.0f}M" if count >= 1e6 else f"{count / 1e3:.0f}K"


def _bytes(count: int | None) -> str:
    if not count:
        return "n/a"
    if count >= GB:
        return f"{count / GB:.2f} GB"
    return f"{count / 1e6:.0f} MB" if count >= 1e6 else f"{count / 1e3:.0f} KB"


def _spread(measurement: dict | None, digits: int = 1, unit: str = "") -> str:
    """``median (p90 x, cv y%)`` so every figure carries its spread."""
    if measurement is None:
        return "n/a"
    return (
        f"{measurement['median']:.{digits}f}{unit} "
        f"(p90 {measurement['p90']:.{digits}f}, cv {100 * measurement['cv']:.1f}%)"
    )


def weights_label(result: dict) -> str:
    """Where the weights came from, so a synthetic model never passes as a real one."""
    manifest = result.get("manifest") or {}
    if result.get("synthetic") or manifest.get("synthetic"):
        return "synthetic (random weights)"
    if manifest.get("source") == "hub":
        commit = manifest.get("resolved_commit") or manifest.get("revision") or ""
        return f"hub @ {commit[:10]}"
    return "none"


def model_row(result: dict, display_names: dict[str, str] | None = None) -> dict:
    """The display row of one result, with every cell already formatted; ``display_names``
    maps config keys to the names people read (:mod:`localbench.report.names`)."""
    manifest = result.get("manifest") or {}
    measured = result["status"] == MEASURED
    memory = (result.get("memory") or {}).get("peak_bytes") if measured else None
    backend = result.get("backend") or {}
    roofline = result.get("roofline") or {}
    status = STATUS_LABELS[result["status"]]
    notes = status if measured else f"{status}: {result.get('reason') or 'no reason recorded'}"
    if measured and backend.get("note"):
        notes += f"; {backend['note']}"
    size = result.get("size_on_disk_bytes") or manifest.get("weights_bytes")
    weights = weights_label(result)
    return {
        "name": result["model"],
        "display": (display_names or {}).get(result["model"]) or result["model"],
        "label": (display_names or {}).get(result["model"]) or result["model"],
        "backend": result.get("backend_requested", "eager"),
        "backend_used": backend.get("used"),
        "backend_note": backend.get("note"),
        "cuda_graph": backend.get("cuda_graph"),
        "roofline_tokens_per_s": roofline.get("tokens_per_s"),
        "roofline_percent": roofline.get("decode_percent_of_roofline"),
        "token_ids": result.get("generated_token_ids"),
        "ttft_median": _median(result, "ttft_ms"),
        "repo": result["repo"],
        "task": TASK_LABELS.get(result["task"], result["task"]),
        "task_key": result["task"],
        "category": CATEGORIES.get(result["task"], "Other"),
        "status": result["status"],
        "status_label": status,
        "measured": measured,
        "parameters": _params(result.get("parameters") or manifest.get("parameters")),
        "size": _bytes(size) if size else "not fetched",
        "weights": weights,
        "synthetic": weights.startswith("synthetic"),
        "dtype": result.get("dtype") or "n/a",
        "memory": _bytes(memory) if measured else "n/a",
        "memory_gb": memory / GB if memory else None,
        "load": f"{result['metrics']['load_s']:.1f} s" if measured else "n/a",
        "decode": _spread(_metric(result, "decode_tokens_per_s")),
        "decode_median": _median(result, "decode_tokens_per_s"),
        "prefill": _spread(_metric(result, "prefill_tokens_per_s"), 0),
        "prefill_median": _median(result, "prefill_tokens_per_s"),
        "threads": result.get("torch_threads"),
        "ttft": _spread(_metric(result, "ttft_ms"), 0, " ms"),
        "itl": _itl(_metric(result, "inter_token_latency_ms")),
        "latency": _spread(_metric(result, "latency_ms"), 0, " ms"),
        "latency_median": _median(result, "latency_ms"),
        "images_per_s": _spread(_metric(result, "images_per_s"), 2),
        "rtf": _spread(_metric(result, "real_time_factor"), 3),
        "rtf_median": _median(result, "real_time_factor"),
        "tokens": _tokens(_metric(result, "tokens_generated")),
        "image_tokens": _image_tokens(result.get("inputs") or {}),
        "notes": notes,
        "reason": result.get("reason") or "",
        "estimate": _bytes(_estimate(result).get("needed_bytes")),
    }


def _estimate(result: dict) -> dict:
    manifest = result.get("manifest") or {}
    return result.get("memory_estimate") or manifest.get("memory_estimate") or {}


def _image_tokens(inputs: dict) -> str:
    """Image tokens after tiling, where the scenario records them (DeepSeek-VL2)."""
    if inputs.get("image_tokens") is None:
        return "n/a"
    width, height = inputs["tiling"]
    return f"{inputs['image_tokens']:,} ({width}x{height} tiles + global)"


def _itl(measurement: dict | None) -> str:
    if measurement is None:
        return "n/a"
    return f"{measurement['median']:.1f} / {measurement['p90']:.1f} ms"


def _tokens(measurement: dict | None) -> str:
    return "n/a" if measurement is None else f"{measurement['median']:.0f}"


def _tokens_match(eager: list[int] | None, fast: list[int] | None) -> str:
    if not eager or not fast:
        return "n/a"
    if eager == fast:
        return f"yes, all {len(eager)}"
    same = next((i for i, (a, b) in enumerate(zip(eager, fast, strict=False)) if a != b), None)
    same = min(len(eager), len(fast)) if same is None else same
    return f"first {same} of {len(eager)}"


def backend_comparison(rows: list[dict]) -> list[dict]:
    """Eager against fast for every model measured with both, with the speedup."""
    by_model: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row["measured"]:
            by_model.setdefault(row["name"], {})[row["backend_used"] or row["backend"]] = row
    comparison = []
    for name, backends in by_model.items():
        eager, fast = backends.get("eager"), backends.get("fast")
        if not eager or not fast or not eager["decode_median"] or not fast["decode_median"]:
            continue
        comparison.append(
            {
                "name": name,
                "display": eager["display"],
                "eager_decode": eager["decode_median"],
                "fast_decode": fast["decode_median"],
                "speedup": fast["decode_median"] / eager["decode_median"],
                "eager_ttft": eager["ttft_median"],
                "fast_ttft": fast["ttft_median"],
                "roofline": fast["roofline_tokens_per_s"],
                "eager_percent": eager["roofline_percent"],
                "fast_percent": fast["roofline_percent"],
                "cuda_graph": fast["cuda_graph"],
                "tokens_match": _tokens_match(eager["token_ids"], fast["token_ids"]),
            }
        )
    return comparison


def settings_row(result: dict, display_names: dict[str, str] | None = None) -> dict:
    """The benchmark settings of one model that matter for its task."""
    bench = (result.get("settings") or {}).get("benchmark") or {}
    task = result["task"]
    parts = []
    if task == "text-generation":
        parts.append(f"prompt {bench.get('prompt_tokens')} tokens")
    if task in ("image-captioning", "visual-question-answering", "multimodal"):
        parts.append("image " + "x".join(str(v) for v in bench.get("image_size", [])))
    if task == "speech-recognition":
        parts.append(f"audio {bench.get('audio_seconds')} s")
    parts.append(f"{bench.get('new_tokens')} new tokens")
    return {
        "name": ((display_names or {}).get(result["model"]) or result["model"])
        + f" ({result.get('backend_requested', 'eager')})",
        "threads": result.get("torch_threads", "n/a"),
        "warmup_runs": bench.get("warmup_runs"),
        "repetitions": bench.get("repetitions"),
        "text": ", ".join(parts),
    }


def key_findings(rows: list[dict]) -> dict[str, list[str]]:
    """Sentences computed from the measured rows, per category."""
    findings: dict[str, list[str]] = {}
    text = [r for r in rows if r["measured"] and r["category"] == "Text Generation Models"]
    if text:
        fastest = max(text, key=lambda r: r["decode_median"] or 0)
        lightest = min(text, key=lambda r: r["memory_gb"] or float("inf"))
        lines = [
            f"Fastest decode: {fastest['label']} at {fastest['decode_median']:.1f} tokens/s "
            "(median, first token excluded).",
            f"Smallest peak memory: {lightest['label']} at {lightest['memory']}.",
        ]
        interactive = [r["label"] for r in text if (r["decode_median"] or 0) >= 10]
        lines.append(
            "At or above 10 tokens/s (comfortable for interactive chat): "
            + (", ".join(interactive) if interactive else "none on this machine")
            + "."
        )
        findings["Text Generation Models"] = lines
    vision = [r for r in rows if r["measured"] and r["category"] == "Vision-Language Models"]
    if vision:
        quickest = min(vision, key=lambda r: r["latency_median"] or float("inf"))
        findings["Vision-Language Models"] = [
            f"Lowest per-image latency: {quickest['label']} at "
            f"{quickest['latency_median']:.0f} ms (median).",
            *[f"{r['label']}: {r['memory']} peak memory." for r in vision],
        ]
    speech = [r for r in rows if r["measured"] and r["category"] == "Speech Recognition"]
    if speech:
        findings["Speech Recognition"] = [
            f"{r['label']}: real-time factor {r['rtf_median']:.3f} ("
            + ("faster" if r["rtf_median"] < 1 else "slower")
            + " than playback), peak memory "
            + r["memory"]
            + "."
            for r in speech
        ]
    return findings


def recommendations(rows: list[dict]) -> list[dict]:
    """Per memory tier, the fastest measured model of each category that fits in it."""
    measured = [r for r in rows if r["measured"] and r["memory_gb"]]
    tiers = []
    for tier in TIERS_GB:
        budget = tier * TIER_SHARE
        picks = []
        for category in dict.fromkeys(CATEGORIES.values()):
            fitting = [
                r for r in measured if r["category"] == category and r["memory_gb"] <= budget
            ]
            if not fitting:
                continue
            if category == "Text Generation Models":
                best = max(fitting, key=lambda r: r["decode_median"] or 0)
            else:
                best = min(fitting, key=lambda r: r["latency_median"] or float("inf"))
            picks.append({"category": category, "row": best})
        all_fitting = list(
            dict.fromkeys(r["display"] for r in measured if r["memory_gb"] <= budget)
        )
        tiers.append(
            {
                "label": f"{tier} GB" if tier != TIERS_GB[-1] else f"{tier}+ GB",
                "budget_gb": budget,
                "picks": picks,
                "picks_total_gb": sum(p["row"]["memory_gb"] for p in picks),
                "all_fitting": all_fitting,
            }
        )
    return tiers


def throughput_rows(records: list[dict], display_names: dict[str, str] | None = None) -> list[dict]:
    """One row per throughput point (model, backend, batch size), in the order given,
    with the speed-up over the same model and backend at batch 1 where that was
    measured; a point that was not measured shows its status and reason."""
    rows = []
    for record in records:
        run = (record.get("settings") or {}).get("throughput") or {}
        row = {
            "name": record["model"],
            "display": (display_names or {}).get(record["model"]) or record["model"],
            "synthetic": bool(record.get("synthetic")),
            "backend": (record.get("backend") or {}).get("used")
            or (record.get("settings") or {}).get("backend", "eager"),
            "batch": run.get("batch_size"),
            "measured": record["status"] == MEASURED,
            "status": STATUS_LABELS.get(record["status"], record["status"]),
            "reason": record.get("reason") or "",
        }
        if row["measured"]:
            row["aggregate"] = _median(record, "aggregate_tokens_per_s")
            row["sequence"] = _median(record, "sequence_tokens_per_s")
            row["ttft_ms"] = _median(record, "ttft_ms")
            row["percent_of_limit"] = (record.get("limit") or {}).get("percent_of_limit")
        rows.append(row)
    single = {
        (r["name"], r["backend"]): r["aggregate"] for r in rows if r["measured"] and r["batch"] == 1
    }
    for row in rows:
        base = single.get((row["name"], row["backend"]))
        row["speedup"] = row["aggregate"] / base if row["measured"] and base else None
    return rows


def threads_text(results: list[dict], warmup: dict) -> str:
    """The CPU threads the measurements ran on: ``2 threads``, or each count when the
    results differ (``1 thread (whisper-base), 2 threads (the others)`` is not hidden)."""
    counts = sorted({r["torch_threads"] for r in results if r.get("torch_threads")})
    if not counts:
        counts = [warmup["torch_threads"]] if warmup.get("torch_threads") else []
    if not counts:
        return "threads not recorded"
    words = [f"{n} thread{'s' if n != 1 else ''}" for n in counts]
    return words[0] if len(words) == 1 else " or ".join(words) + " (per model below)"


def energy_summary(results: list[dict]) -> dict:
    """The energy of the measured results: a row per result with a counter reading, and
    the reasons where none could be read (usually one, for the whole machine)."""
    rows, reasons = [], []
    for result in results:
        energy = result.get("energy") if result["status"] == MEASURED else None
        if not isinstance(energy, dict):
            continue  # not measured, or written before energy was recorded
        if energy.get("status") == NOT_AVAILABLE:
            reasons.append(energy.get("reason") or "no reason recorded")
        elif energy.get("status") == MEASURED:
            rows.append(
                {
                    "name": result["model"],
                    "backend": result.get("backend_requested", "eager"),
                    **energy,
                }
            )
    return {"rows": rows, "reasons": list(dict.fromkeys(reasons)), "status": NOT_AVAILABLE}


def summary_context(
    results: list[dict],
    hardware: dict,
    warmup: dict,
    peer_records: list[dict] = (),
    throughput_records: list[dict] = (),
    display_names: dict[str, str] | None = None,
    charts: dict | None = None,
) -> dict:
    """Everything the template shows, derived from this run's records (and the peer
    engines' records, each labelled as a peer's); ``charts`` are the chart images to
    link (:func:`localbench.report.charts.chart_links`)."""
    rows = [model_row(r, display_names) for r in results]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["name"]] = counts.get(row["name"], 0) + 1
    for row in rows:
        if counts[row["name"]] > 1:
            row["label"] = f"{row['display']} ({row['backend']})"
    measured = [r for r in rows if r["measured"]]
    names = list(dict.fromkeys(r["name"] for r in rows))
    measured_names = list(dict.fromkeys(r["name"] for r in measured))
    categories = {}
    for row in rows:
        categories.setdefault(row["category"], []).append(row)
    total_storage = sum(
        (r.get("size_on_disk_bytes") or 0) for r in results if r["status"] == MEASURED
    )
    return {
        "generated_at": now_utc(),
        "hardware": hardware,
        "warmup": warmup,
        "threads": threads_text(results, warmup),
        "rows": rows,
        "measured": measured,
        "model_count": len(names),
        "measured_model_count": len(measured_names),
        "not_measured": [r for r in rows if not r["measured"]],
        "comparison": backend_comparison(rows),
        # One line per model (its backends share one checkpoint), in config order.
        "storage_rows": list({r["name"]: r for r in rows}.values()),
        "categories": categories,
        "synthetic_count": sum(1 for r in rows if r["synthetic"]),
        "findings": key_findings(rows),
        "tiers": recommendations(rows),
        "tier_share": TIER_SHARE,
        "total_storage": _bytes(total_storage),
        "charts": {
            "throughput": None,
            **(charts or {"speed": {}, "memory": None, "roofline": None}),
        },
        # The tasks of each category, in config order, for their charts.
        "category_tasks": {
            category: list(dict.fromkeys(r["task_key"] for r in members))
            for category, members in categories.items()
        },
        "settings": [settings_row(r, display_names) for r in results],
        "throughput": throughput_rows(list(throughput_records), display_names),
        "energy": energy_summary(results),
        "peers": [
            {**peer, "display": (display_names or {}).get(peer["model"]) or peer["model"]}
            for peer in peer_table(list(peer_records), rows, roofline_bandwidth(warmup)[0])
        ],
    }


def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of every Markdown template, with the ``md`` escape filter."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    environment.filters["md"] = md
    environment.filters["gb"] = _bytes
    return environment


def render_summary(context: dict) -> str:
    """Render the summary template with ``context``."""
    return template_environment().get_template("summary.md.j2").render(**context)

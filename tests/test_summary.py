from localbench.report.summary import md, model_row, recommendations, weights_label


def test_md_escapes_everything_that_could_break_a_table_or_add_markup():
    text = "a | b *bold* _x_ `code` <b>html</b> [link](x) # head\nnext"
    escaped = md(text)
    assert "\n" not in escaped
    for char in "|*_`[]#":
        assert f"\\{char}" in escaped
    assert "&lt;b&gt;html&lt;/b&gt;" in escaped  # literal in Markdown and in HTML
    assert md(None) == ""


def _row(name, category, memory_gb, decode=None, latency=None):
    return {
        "name": name,
        "display": name.upper(),
        "category": category,
        "measured": True,
        "memory_gb": memory_gb,
        "decode_median": decode,
        "latency_median": latency,
    }


def test_tiers_pick_the_fastest_model_that_fits_from_measured_memory():
    rows = [
        _row("small-llm", "Text Generation Models", 4.0, decode=20.0),
        _row("big-llm", "Text Generation Models", 14.0, decode=30.0),
        _row("captioner", "Vision-Language Models", 1.0, latency=900.0),
        {**_row("unmeasured", "Text Generation Models", None), "measured": False},
    ]
    tiers = {t["label"]: t for t in recommendations(rows)}
    sixteen = {p["category"]: p["row"]["name"] for p in tiers["16 GB"]["picks"]}
    assert sixteen == {"Text Generation Models": "small-llm", "Vision-Language Models": "captioner"}
    assert tiers["16 GB"]["picks_total_gb"] == 5.0
    twenty_four = {p["category"]: p["row"]["name"] for p in tiers["24 GB"]["picks"]}
    assert twenty_four["Text Generation Models"] == "big-llm"  # 14 GB <= 75% of 24 GB
    assert "UNMEASURED" not in tiers["32+ GB"]["all_fitting"]
    assert tiers["32+ GB"]["all_fitting"] == ["SMALL-LLM", "BIG-LLM", "CAPTIONER"]


def test_synthetic_weights_are_always_labelled():
    assert weights_label({"synthetic": True}).startswith("synthetic")
    assert weights_label({"manifest": {"synthetic": True}}).startswith("synthetic")
    hub = {"manifest": {"source": "hub", "resolved_commit": "0123456789abcdef"}}
    assert weights_label(hub) == "hub @ 0123456789"


def test_rows_carry_the_display_name_beside_the_config_key_and_repo():
    result = {"model": "qwen", "repo": "Qwen/Qwen2.5-1.5B-Instruct", "task": "text-generation"}
    row = model_row({**result, "status": "skipped", "reason": "too big"}, {"qwen": "Qwen 2.5"})
    assert (row["display"], row["label"], row["name"]) == ("Qwen 2.5", "Qwen 2.5", "qwen")
    assert row["repo"] == "Qwen/Qwen2.5-1.5B-Instruct"
    # A model the names do not cover keeps its config key.
    assert model_row({**result, "status": "skipped"}, {})["display"] == "qwen"

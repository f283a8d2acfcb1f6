from pathlib import Path

import pytest
import yaml
from localbench.config import ConfigError, check_config, enabled_models, model_settings

ROOT = Path(__file__).resolve().parent.parent
SEED_REPOS = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "Salesforce/blip-image-captioning-base",
    "Salesforce/blip2-opt-2.7b",
    "deepseek-ai/deepseek-vl2-small",
    "openai/whisper-base",
}


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_shipped_config_is_valid_and_lists_every_seed_model(config):
    check_config(config)
    assert {m["repo"] for m in config["models"].values()} == SEED_REPOS


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(devcie="cpu"), "unknown key 'devcie' in (top level); allowed keys:"),
        (lambda c: c.update(device="gpu"), "device: 'gpu' is not allowed; allowed values: auto"),
        (lambda c: c.update(weights="maybe"), "weights: 'maybe' is not allowed"),
        (
            lambda c: c.update(size="huge"),
            "size: 'huge' is not allowed; allowed values: full, tiny",
        ),
        (
            lambda c: c["models"]["blip-base"].update(dtype="fp8"),
            "models.blip-base.dtype: 'fp8' is not allowed",
        ),
        (
            lambda c: c["models"]["whisper-base"].update(benchmark={"repetitions": 0}),
            "models.whisper-base.benchmark.repetitions",
        ),
        (
            lambda c: c["models"]["whisper-base"].update(benchmark={"repetitions": "3"}),
            "expected integer, got '3'",
        ),
        (lambda c: c["models"]["blip-base"].pop("task"), "'task' is a required property"),
        (
            lambda c: c["models"]["blip-base"].update(enabled="yes"),
            "models.blip-base.enabled: expected boolean",
        ),
        (
            lambda c: c["models"].update({"a/b": {"task": "text-generation", "repo": "a/b"}}),
            "does not match",
        ),
        (
            lambda c: c["models"]["whisper-base"].update(throughput={"batch_sizes": [1, 4]}),
            "models.whisper-base.throughput: expected only on text-generation models",
        ),
        (
            lambda c: c["models"]["qwen2.5-1.5b-instruct"].update(
                throughput={"batch_sizes": [0, 4]}
            ),
            "models.qwen2.5-1.5b-instruct.throughput.batch_sizes",
        ),
        (
            lambda c: c["models"]["qwen2.5-1.5b-instruct"].update(
                throughput={"batch_sizes": [4, 4]}
            ),
            "models.qwen2.5-1.5b-instruct.throughput.batch_sizes",
        ),
        (
            lambda c: c["models"]["qwen2.5-1.5b-instruct"].update(throughput={"new_tokens": 8}),
            "'batch_sizes' is a required property",
        ),
    ],
)
def test_bad_config_names_the_key_and_what_is_allowed(config, mutate, expected):
    mutate(config)
    with pytest.raises(ConfigError) as caught:
        check_config(config)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_model_settings_apply_defaults_then_overrides(config):
    settings = model_settings(config, "blip-base")
    assert settings["benchmark"]["new_tokens"] == 20  # the model's own override
    assert settings["benchmark"]["repetitions"] == config["benchmark_defaults"]["repetitions"]
    assert settings["dtype"] == "auto" and settings["revision"] == "main"


def test_disabled_models_are_left_out(config):
    config["models"]["blip-base"]["enabled"] = False
    assert "blip-base" not in enabled_models(config)
    assert "whisper-base" in enabled_models(config)

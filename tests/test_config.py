from pathlib import Path

import pytest
import yaml
from localbench.config import ConfigError, check_config, enabled_models, model_settings
from localbench.report.names import check_display_names, display_name, display_names

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
        (
            lambda c: c["pipelines"]["voice-notes"]["stages"][0].update(backend="turbo"),
            "pipelines.voice-notes.stages[0].backend: 'turbo' is not allowed; allowed values: "
            "eager, fast",
        ),
        (
            lambda c: c["pipelines"]["photo-stories"]["stages"][0].update(decode_batch=0),
            "pipelines.photo-stories.stages[0].decode_batch: expected a number at least 1, got 0",
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


@pytest.mark.parametrize(
    "value",
    ["", " Qwen", "Qwen ", "Qwen\n", "two\nlines", "tab\there", "a{model}", "x" * 81, "a\u2028b"],
)
def test_a_bad_display_name_gets_one_line_naming_the_key(config, value):
    config["models"]["blip-base"]["display_name"] = value
    with pytest.raises(ConfigError) as caught:
        check_config(config)
    message = str(caught.value)
    assert message.startswith("invalid config: models.blip-base.display_name: ")
    assert "a display name is 1 to 80 characters on one line" in message
    assert "\n" not in message


def test_a_display_name_that_is_not_text_is_refused(config):
    config["models"]["blip-base"]["display_name"] = 5
    with pytest.raises(ConfigError, match=r"models.blip-base.display_name: expected string, got 5"):
        check_config(config)


def test_display_names_default_to_the_seed_report_or_the_repo_and_can_be_set(config):
    names = display_names(config)
    assert names == {
        "deepseek-r1-distill-qwen-1.5b": "DeepSeek-R1-Distill-Qwen 1.5B",
        "qwen2.5-1.5b-instruct": "Qwen 2.5 1.5B",
        "llama-3.2-3b-instruct": "Llama 3.2 3B",
        "blip-base": "BLIP base",
        "blip2-opt-2.7b": "BLIP-2 2.7B",
        "deepseek-vl2-small": "DeepSeek-VL2-Small",
        "whisper-base": "Whisper base",
    }
    config["models"]["blip-base"]["display_name"] = "BLIP (captions) <b>"
    config["models"]["tiny"] = {"task": "text-generation", "repo": "TinyLlama/TinyLlama-1.1B"}
    check_config(config)
    check_display_names(config)
    assert display_name(config, "blip-base") == "BLIP (captions) <b>"
    assert display_name(config, "tiny") == "TinyLlama-1.1B"


def test_one_repo_configured_twice_shows_each_config_key_beside_its_name(config):
    config["models"]["blip-fp16"] = {**config["models"]["blip-base"], "dtype": "float16"}
    check_display_names(config)
    names = display_names(config)
    assert names["blip-base"] == "BLIP base (blip-base)"
    assert names["blip-fp16"] == "BLIP base (blip-fp16)"
    config["models"]["blip-fp16"]["display_name"] = "BLIP base, fp16"
    assert display_names(config)["blip-base"] == "BLIP base"


def test_two_models_with_one_display_name_are_refused_naming_the_key_to_change(config):
    config["models"]["qwen2.5-1.5b-instruct"]["display_name"] = "Qwen 2.5 1.5B"
    config["models"]["whisper-base"]["display_name"] = "qwen 2.5 1.5b"
    with pytest.raises(ConfigError) as caught:
        check_display_names(config)
    assert str(caught.value) == (
        "invalid config: models.whisper-base.display_name: 'qwen 2.5 1.5b' is also the "
        "display name of models.qwen2.5-1.5b-instruct; each model needs its own"
    )
    # A name set in the config beside another model's default: the default one shows
    # its config key, and nothing is refused.
    del config["models"]["qwen2.5-1.5b-instruct"]["display_name"]
    check_display_names(config)
    assert display_names(config)["qwen2.5-1.5b-instruct"] == "Qwen 2.5 1.5B (qwen2.5-1.5b-instruct)"


def test_model_settings_apply_defaults_then_overrides(config):
    settings = model_settings(config, "blip-base")
    assert settings["benchmark"]["new_tokens"] == 20  # the model's own override
    assert settings["benchmark"]["repetitions"] == config["benchmark_defaults"]["repetitions"]
    assert settings["dtype"] == "auto" and settings["revision"] == "main"


def test_disabled_models_are_left_out(config):
    config["models"]["blip-base"]["enabled"] = False
    assert "blip-base" not in enabled_models(config)
    assert "whisper-base" in enabled_models(config)

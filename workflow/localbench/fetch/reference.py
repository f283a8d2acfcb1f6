"""The shipped architecture facts of the seed models: one data file per repo,
``architectures/<org>--<name>.json``, with the real ``config.json``,
``generation_config.json``, processor settings and tokenizer special tokens (its
``source`` field says where they come from).

Only reading them lives here, so that a model's own package (DeepSeek-VL2) can read
its facts without importing what scales or builds models.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

SEED_TASKS: dict[str, str] = {
    "Qwen/Qwen2.5-1.5B-Instruct": "text-generation",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": "text-generation",
    "meta-llama/Llama-3.2-3B-Instruct": "text-generation",
    "Salesforce/blip-image-captioning-base": "image-captioning",
    "Salesforce/blip2-opt-2.7b": "visual-question-answering",
    "openai/whisper-base": "speech-recognition",
    "deepseek-ai/deepseek-vl2-small": "multimodal",
}


class UnknownArchitecture(Exception):
    """Raised for a repo that has no shipped architecture file."""

    def __init__(self, repo: str):
        super().__init__(
            f"no architecture facts for {repo!r}; shipped: {', '.join(sorted(SEED_TASKS))}"
        )
        self.repo = repo


def _data_file(repo: str):
    return resources.files("localbench.fetch").joinpath(
        "architectures", repo.replace("/", "--") + ".json"
    )


@functools.cache
def _read_architecture(repo: str) -> str:
    if repo not in SEED_TASKS:
        raise UnknownArchitecture(repo)
    return _data_file(repo).read_text(encoding="utf-8")


def load_architecture(repo: str) -> dict[str, Any]:
    """Return the shipped facts for ``repo`` (a fresh dict the caller may change).

    Keys: repo, task, config, generation_config, preprocessor, tokenizer, source,
    and for some repos stored_tied_weights / max_shard_size / defaults.
    Raises UnknownArchitecture for any repo outside ``SEED_TASKS``.
    """
    return json.loads(_read_architecture(repo))


def checkpoint_dtype(repo: str) -> str:
    """The dtype the published checkpoint stores its weights in, e.g. ``"bfloat16"``."""
    return load_architecture(repo)["config"]["torch_dtype"]


def is_buildable(repo: str) -> bool:
    """Whether transformers has a class for ``repo``'s architecture.

    DeepSeek-VL2 has none: the project's own implementation builds and loads it
    (``localbench.deepseek_vl2``).
    """
    return load_architecture(repo)["config"].get("model_type") != "deepseek_vl_v2"

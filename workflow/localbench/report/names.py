"""Display names of models: what a person reads in tables and charts.

A model is named by its config key in files and on the command line
(``qwen2.5-1.5b-instruct``); people read the name the seed report gives it ("Qwen 2.5
1.5B"). The name is, in order: the model's own ``display_name`` in config.yaml; the
published name shipped with the seed models' architecture facts; the repo id's name
part, for a model the user adds (``TinyLlama/TinyLlama-1.1B-Chat-v1.0`` gives
``TinyLlama-1.1B-Chat-v1.0``).
"""

from __future__ import annotations

from localbench.config import ConfigError, excerpt
from localbench.fetch.reference import SEED_TASKS, load_architecture


def default_display_name(repo: str) -> str:
    """The name a model gets when config.yaml names none: the seed report's name for a
    seed repo, else the name part of the repo id."""
    if repo in SEED_TASKS:
        name = load_architecture(repo).get("display_name")
        if name:
            return name
    return repo.rsplit("/", 1)[-1]


def display_name(config: dict, name: str) -> str:
    """The display name of the configured model ``name``."""
    model = config["models"][name]
    return model.get("display_name") or default_display_name(model["repo"])


def display_names(config: dict) -> dict[str, str]:
    """Every configured model's display name, by config key, in config order. Two models
    whose default names are the same (one repo configured twice, say with another dtype)
    each show their config key beside it, "BLIP base (blip-fp16)"; a name set in the
    config is shown as set."""
    models = config["models"]
    names = {name: display_name(config, name) for name in models}
    counts: dict[str, int] = {}
    for shown in names.values():
        counts[shown.casefold()] = counts.get(shown.casefold(), 0) + 1
    for name, shown in names.items():
        if counts[shown.casefold()] > 1 and not models[name].get("display_name"):
            names[name] = f"{shown} ({name})"
    return names


def check_display_names(config: dict) -> None:
    """Raise :class:`ConfigError` when two models would show the same display name (case
    aside), in one line naming the key to change; run after
    :func:`localbench.config.check_config`."""
    seen: dict[str, str] = {}
    for name, shown in display_names(config).items():
        first = seen.setdefault(shown.casefold(), name)
        if first == name:
            continue
        # The key to change: the one that set this name itself, the later one if both did.
        change, keep = name, first
        if not config["models"][name].get("display_name") and config["models"][first].get(
            "display_name"
        ):
            change, keep = first, name
        raise ConfigError(
            f"invalid config: models.{change}.display_name: {excerpt(shown)} is also the "
            f"display name of models.{keep}; each model needs its own"
        )

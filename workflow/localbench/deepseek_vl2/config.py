"""The published DeepSeek-VL2 config.json, checked against what this implementation
covers and turned into transformers configs for its two towers.

The config of deepseek-vl2-small sets few keys; the rest are code defaults of the
reference implementation, shipped in the ``defaults`` block of the architecture file.
Every value this implementation depends on is checked here, so a checkpoint that
differs gets one line naming the key instead of a wrong model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

REPO = "deepseek-ai/deepseek-vl2-small"
MODEL_TYPE = "deepseek_vl_v2"

# Tiny variant: SigLIP keeps its 384-px tile and 14-px patch, so tiling and image-token
# counts are those of the real model; only widths, depths and the vocabulary shrink.
_TINY_VISION = {"width": 64, "layers": 2, "heads": 4}
_TINY_LANGUAGE = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
}
# Ids below stay; the special-token block from here up moves down (as for the other tiny
# models, architectures.tiny_token_map).
_TINY_REGULAR_TOKENS = 1024

# Language-config keys of the reference code that DeepseekV2Config does not take: they
# are checked here and then left out.
_CHECKED_ONLY = ("scoring_func", "use_mla", "moe_layer_freq", "lm_head", "rm_head")
_NOT_CONFIG = ("architectures", "model_type", "torch_dtype", "auto_map", "transformers_version")


class ConfigMismatch(ValueError):
    """A DeepSeek-VL2 config or checkpoint that differs from what is implemented."""


@dataclass(frozen=True)
class VL2Config:
    """Everything the model and the processor need, resolved from config.json and defaults."""

    vision: dict  # SiglipVisionConfig keyword arguments
    language: dict  # DeepseekV2Config keyword arguments
    n_embed: int
    projector_input: int
    downsample_ratio: int
    tile_size: int
    patch_size: int
    candidate_resolutions: list[tuple[int, int]]
    checkpoint_dtype: str


def code_defaults() -> dict:
    """Reference-code defaults the published config relies on (architecture file)."""
    from localbench.fetch.reference import load_architecture

    return load_architecture(REPO)["defaults"]


def read_config(model_dir: Path) -> dict:
    """config.json of a checkpoint folder."""
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigMismatch(f"{path}: cannot read it as JSON ({error})") from None


def _require(source: str, key: str, value, allowed) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ConfigMismatch(f"{source}: {key}={value!r} is not implemented (supported: {shown})")


def resolve(config: dict, source: str = "config.json") -> VL2Config:
    """Check ``config`` (a DeepSeek-VL2 config.json) and resolve it with the code defaults.

    Raises ConfigMismatch naming ``source`` and the key for anything this
    implementation does not cover (another projector, tile tag, router, vision model).
    """
    defaults = code_defaults()
    _require(source, "model_type", config.get("model_type"), [MODEL_TYPE])
    for key in ("vision_config", "language_config", "projector_config"):
        if not isinstance(config.get(key), dict):
            raise ConfigMismatch(f"{source}: {key} is missing")
    _require(source, "tile_tag", config.get("tile_tag", "2D"), ["2D"])
    _require(source, "global_view_pos", config.get("global_view_pos", "head"), ["head"])

    vision = {**defaults["vision_config"], **config["vision_config"]}
    _require(
        source,
        "vision_config.model_name",
        vision.get("model_name"),
        ["siglip_so400m_patch14_384"],
    )
    _require(source, "vision_config.class_token", vision["class_token"], [False])
    _require(source, "vision_config.ignore_head", vision["ignore_head"], [True])
    _require(source, "vision_config.qkv_bias", vision["qkv_bias"], [True])
    width = vision["width"]
    if width % vision["heads"]:
        raise ConfigMismatch(
            f"{source}: vision_config.width={width} is not a multiple of heads={vision['heads']}"
        )
    siglip = {
        "hidden_size": width,
        "intermediate_size": int(width * vision["mlp_ratio"]),
        "num_hidden_layers": vision["layers"],
        "num_attention_heads": vision["heads"],
        "image_size": vision["image_size"],
        "patch_size": vision["patch_size"],
        "num_channels": 3,
        # timm SigLIP: tanh-approximated GELU, LayerNorm eps 1e-6, no pooling head used.
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
        "vision_use_head": False,
    }

    projector = {**defaults["projector_config"], **config["projector_config"]}
    _require(
        source,
        "projector_config.projector_type",
        projector["projector_type"],
        ["downsample_mlp_gelu"],
    )
    _require(source, "projector_config.depth", projector["depth"], [2])
    _require(source, "projector_config.mlp_ratio", projector["mlp_ratio"], [1])
    if projector["input_dim"] != width:
        raise ConfigMismatch(
            f"{source}: projector_config.input_dim={projector['input_dim']} differs from "
            f"vision_config.width={width}"
        )

    language = {**defaults["language_config"], **config["language_config"]}
    _require(source, "language_config.scoring_func", language["scoring_func"], ["softmax"])
    _require(source, "language_config.use_mla", language["use_mla"], [True])
    _require(source, "language_config.topk_method", language.get("topk_method"), ["greedy"])
    _require(source, "language_config.moe_layer_freq", language["moe_layer_freq"], [1])
    _require(source, "language_config.norm_topk_prob", language["norm_topk_prob"], [False])
    if language["hidden_size"] != projector["n_embed"]:
        raise ConfigMismatch(
            f"{source}: projector_config.n_embed={projector['n_embed']} differs from "
            f"language_config.hidden_size={language['hidden_size']}"
        )
    deepseek_v2 = {
        key: value
        for key, value in language.items()
        if key not in _CHECKED_ONLY and key not in _NOT_CONFIG
    }

    tile = vision["image_size"]
    candidates = [tuple(pair) for pair in config.get("candidate_resolutions") or []]
    if not candidates:
        raise ConfigMismatch(f"{source}: candidate_resolutions is missing or empty")
    for pair in candidates:
        if len(pair) != 2 or pair[0] % tile or pair[1] % tile:
            raise ConfigMismatch(
                f"{source}: candidate_resolutions entry {list(pair)} is not a multiple of "
                f"the {tile}-px tile"
            )
    return VL2Config(
        vision=siglip,
        language=deepseek_v2,
        n_embed=projector["n_embed"],
        projector_input=width * projector["downsample_ratio"] ** 2,
        downsample_ratio=projector["downsample_ratio"],
        tile_size=tile,
        patch_size=vision["patch_size"],
        candidate_resolutions=candidates,
        checkpoint_dtype=config.get("torch_dtype", language.get("torch_dtype", "bfloat16")),
    )


def _tiny_id(token_id: int, first_special: int) -> int:
    if token_id < _TINY_REGULAR_TOKENS:
        return token_id
    if token_id < first_special:
        raise ValueError(f"token id {token_id} has no place in the tiny vocabulary")
    return token_id - first_special + _TINY_REGULAR_TOKENS


def tiny_architecture(architecture: dict) -> dict:
    """The DeepSeek-VL2 architecture record scaled down: 2-layer towers of width 64, 8
    experts, and a vocabulary of 1,024 regular tokens plus the real special-token block.
    Tiles stay 384 px with 14-px patches, so image-token counts are the real ones."""
    out = copy.deepcopy(architecture)
    config = out["config"]
    config["vision_config"].update(_TINY_VISION)
    language = config["language_config"]
    # The special tokens (BOS 100000 upwards) sit at the top of the vocabulary.
    first_special = min(tid for tid, _, _ in architecture["tokenizer"]["added_tokens"])
    vocab = _tiny_id(language["vocab_size"] - 1, first_special) + 1
    language.update(_TINY_LANGUAGE)
    language["vocab_size"] = vocab
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(language.get(key), int):
            language[key] = _tiny_id(language[key], first_special)
    config["projector_config"]["n_embed"] = language["hidden_size"]
    config["projector_config"]["input_dim"] = config["vision_config"]["width"]
    tokenizer = out["tokenizer"]
    tokenizer["added_tokens"] = [
        [_tiny_id(tid, first_special), content, special]
        for tid, content, special in tokenizer["added_tokens"]
    ]
    tokenizer["regular_vocab_size"] = None
    return out

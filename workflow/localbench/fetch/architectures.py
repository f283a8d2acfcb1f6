"""Architecture facts of the seed models, and tiny look-alikes of them.

The facts are read by :mod:`localbench.fetch.reference` (one shipped data file per
repo). From them we count parameters without allocating memory (meta device) and
derive a *tiny* configuration with the same structure, small enough to build and run
on a CPU in milliseconds.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from localbench.fetch.reference import (
    is_buildable,
    load_architecture,
)

SIZES = ("full", "tiny")

# Tiny vocabularies keep ids below this bound as they are and move the block of
# special tokens at the top of the real vocabulary down to start here.
TINY_REGULAR_TOKENS = 1024

# Config keys whose values are token ids (scalars, lists, or [position, id] pairs).
_TOKEN_ID_KEY = re.compile(r"(_token_ids?|_token_index)$")
_TOKEN_LIST_KEYS = {"suppress_tokens", "begin_suppress_tokens"}
_TOKEN_PAIR_KEYS = {"forced_decoder_ids"}
_TOKEN_MAP_KEYS = {"lang_to_id", "task_to_id"}


# ---------------------------------------------------------------------------
# Token ids in tiny vocabularies


def _text_vocab_size(config: dict) -> int:
    if "vocab_size" in config:
        return config["vocab_size"]
    return config["text_config"]["vocab_size"]


def _scalar_token_ids(node: Any) -> list[int]:
    """All scalar token ids in a config tree (suppress lists are left out on purpose)."""
    found: list[int] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if _TOKEN_ID_KEY.search(key) and isinstance(value, int):
                found.append(value)
            elif _TOKEN_ID_KEY.search(key) and isinstance(value, list):
                found.extend(v for v in value if isinstance(v, int))
            elif key in _TOKEN_PAIR_KEYS and isinstance(value, list):
                found.extend(pair[1] for pair in value if pair[1] is not None)
            elif isinstance(value, dict):
                found.extend(_scalar_token_ids(value))
    return found


def tiny_token_map(config: dict) -> Callable[[int], int | None]:
    """Map a token id of the real vocabulary of ``config`` to the tiny vocabulary.

    Ids below ``TINY_REGULAR_TOKENS`` stay. The top of the real vocabulary, from
    the lowest token id the config names at or above that bound (the first
    special token, e.g. Qwen's 151643 or OPT's newline 50118) up to
    ``vocab_size``, moves down to start at ``TINY_REGULAR_TOKENS``, so every
    special token keeps its place relative to the others. Ids in between have
    no tiny counterpart (``None``).
    """
    high = [i for i in _scalar_token_ids(config) if i >= TINY_REGULAR_TOKENS]
    start = min(high) if high else _text_vocab_size(config)
    shift = start - TINY_REGULAR_TOKENS

    def mapping(token_id: int) -> int | None:
        if token_id < TINY_REGULAR_TOKENS:
            return token_id
        if token_id >= start:
            return token_id - shift
        return None

    return mapping


def remap_token_ids(node: Any, mapping: Callable[[int], int | None]) -> Any:
    """Copy of a config/generation-config tree with every token id passed through ``mapping``.

    Ids without a counterpart are dropped from lists; a scalar without one is an error.
    """
    if not isinstance(node, dict):
        return copy.deepcopy(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if _TOKEN_ID_KEY.search(key) and isinstance(value, int):
            new = mapping(value)
            if new is None:
                raise ValueError(f"token id {key}={value} has no place in the tiny vocabulary")
            out[key] = new
        elif (_TOKEN_ID_KEY.search(key) or key in _TOKEN_LIST_KEYS) and isinstance(value, list):
            out[key] = [m for v in value if (m := mapping(v)) is not None]
        elif key in _TOKEN_PAIR_KEYS and isinstance(value, list):
            out[key] = [
                [pos, None if tid is None else mapping(tid)]
                for pos, tid in value
                if tid is None or mapping(tid) is not None
            ]
        elif key in _TOKEN_MAP_KEYS and isinstance(value, dict):
            out[key] = {name: mapping(tid) for name, tid in value.items()}
        else:
            out[key] = remap_token_ids(value, mapping)
    return out


# ---------------------------------------------------------------------------
# Tiny configurations

_TINY_LAYERS = 2
_TINY_HEAD_DIM = 16
_TINY_HIDDEN = 64
_TINY_HEADS = 4
_TINY_FFN = 256


def _decoder_lm_dims(config: dict) -> dict[str, int]:
    """Tiny sizes for a GQA decoder that keep the query-to-KV-head ratio and the MLP ratio."""
    group = config["num_attention_heads"] // config["num_key_value_heads"]
    kv_heads = 1 if group >= 4 else 2
    heads = group * kv_heads
    hidden = heads * _TINY_HEAD_DIM
    ratio = config["intermediate_size"] / config["hidden_size"]
    return {
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": max(16, round(hidden * ratio / 16) * 16),
        "num_hidden_layers": _TINY_LAYERS,
    }


def _tiny_qwen2(config: dict) -> None:
    config.update(_decoder_lm_dims(config))
    config["max_window_layers"] = min(config.get("max_window_layers", _TINY_LAYERS), _TINY_LAYERS)


def _tiny_llama(config: dict) -> None:
    config.update(_decoder_lm_dims(config))
    if "head_dim" in config:
        config["head_dim"] = _TINY_HEAD_DIM


def _shrink_encoder(part: dict, ffn_key: str = "intermediate_size") -> None:
    """Shrink a BERT/ViT/OPT-style stack (``hidden_size``, ``num_*`` keys) in place."""
    part.update(
        {
            "hidden_size": _TINY_HIDDEN,
            ffn_key: _TINY_FFN,
            "num_hidden_layers": _TINY_LAYERS,
            "num_attention_heads": _TINY_HEADS,
        }
    )


def _tiny_blip(config: dict) -> None:
    vision, text = config["vision_config"], config["text_config"]
    _shrink_encoder(vision)
    vision["image_size"] = 4 * vision.get("patch_size", 16)
    _shrink_encoder(text)
    # The decoder cross-attends to the vision tower, so it must know the new width.
    text["encoder_hidden_size"] = vision["hidden_size"]


def _tiny_blip2(config: dict) -> None:
    vision, qformer, text = config["vision_config"], config["qformer_config"], config["text_config"]
    _shrink_encoder(vision)
    vision["patch_size"] = vision.get("patch_size", 14)
    vision["image_size"] = 4 * vision["patch_size"]
    # cross_attention_frequency stays 2: with 2 layers, layer 0 cross-attends to the image.
    _shrink_encoder(qformer)
    qformer["encoder_hidden_size"] = vision["hidden_size"]
    _shrink_encoder(text, ffn_key="ffn_dim")
    # OPT-2.7b projects embeddings only when word_embed_proj_dim != hidden_size; it does not.
    text["word_embed_proj_dim"] = text["hidden_size"]


def _tiny_whisper(config: dict) -> None:
    config.update(
        {
            "d_model": _TINY_HIDDEN,
            "encoder_layers": _TINY_LAYERS,
            "decoder_layers": _TINY_LAYERS,
            "num_hidden_layers": _TINY_LAYERS,
            "encoder_attention_heads": _TINY_HEADS,
            "decoder_attention_heads": _TINY_HEADS,
            "encoder_ffn_dim": _TINY_FFN,
            "decoder_ffn_dim": _TINY_FFN,
        }
    )
    # num_mel_bins and max_source_positions stay: the feature extractor always
    # yields 80 x 3000 frames and the encoder insists on exactly that length.


_TINY_SCALERS: dict[str, Callable[[dict], None]] = {
    "qwen2": _tiny_qwen2,
    "llama": _tiny_llama,
    "blip": _tiny_blip,
    "blip-2": _tiny_blip2,
    "whisper": _tiny_whisper,
}


def _set_vocab_size(config: dict, size: int) -> None:
    if "vocab_size" in config:
        config["vocab_size"] = size
    else:
        config["text_config"]["vocab_size"] = size


def tiny_config(config: dict) -> dict:
    """The same architecture as ``config`` scaled down: 2 layers, width 64-96, 4-6 heads.

    Structure is kept: model type, GQA ratio, tied embeddings, biases, cross-attention
    frequency, rope scaling, query tokens, mel bins. Images shrink to 4x4 patches.
    The vocabulary shrinks as ``tiny_token_map`` describes and every token id in
    the config is moved with it.
    """
    model_type = config.get("model_type")
    if model_type not in _TINY_SCALERS:
        raise NotImplementedError(f"no tiny variant for model_type {model_type!r}")
    mapping = tiny_token_map(config)
    tiny = remap_token_ids(config, mapping)
    _set_vocab_size(tiny, mapping(_text_vocab_size(config) - 1) + 1)
    _TINY_SCALERS[model_type](tiny)
    return tiny


def _tiny_generation_config(generation_config: dict, config: dict, tiny: dict) -> dict:
    out = remap_token_ids(generation_config, tiny_token_map(config))
    if "alignment_heads" in out:
        # Word-timestamp heads name (layer, head) pairs that must exist in the tiny decoder.
        layers, heads = tiny["decoder_layers"], tiny["decoder_attention_heads"]
        pairs = {(min(layer, layers - 1), head % heads) for layer, head in out["alignment_heads"]}
        out["alignment_heads"] = [list(pair) for pair in sorted(pairs)]
    return out


def _tiny_preprocessor(preprocessor: dict, tiny: dict) -> dict:
    out = copy.deepcopy(preprocessor)
    image = out.get("preprocessor_config")
    if image and "vision_config" in tiny and "size" in image:
        side = tiny["vision_config"]["image_size"]
        image["size"] = side if isinstance(image["size"], int) else {"height": side, "width": side}
    return out


def _tiny_tokenizer(tokenizer: dict, config: dict, tiny: dict) -> dict:
    mapping = tiny_token_map(config)
    out = copy.deepcopy(tokenizer)
    out["added_tokens"] = [
        [mapping(tid), content, special]
        for tid, content, special in tokenizer["added_tokens"]
        if mapping(tid) is not None
    ]
    out["pinned_tokens"] = {
        content: mapping(tid)
        for content, tid in tokenizer["pinned_tokens"].items()
        if mapping(tid) is not None
    }
    out["length"] = mapping(tokenizer["length"] - 1) + 1
    out["regular_vocab_size"] = None
    return out


def tiny_architecture(architecture: dict) -> dict:
    """A whole architecture record (config, generation config, processor, tokenizer) made tiny."""
    config = architecture["config"]
    if config.get("model_type") == "deepseek_vl_v2":
        from localbench.deepseek_vl2.config import tiny_architecture as tiny_deepseek_vl2

        return tiny_deepseek_vl2(architecture)
    tiny = tiny_config(config)
    out = copy.deepcopy(architecture)
    out["config"] = tiny
    if architecture.get("generation_config"):
        out["generation_config"] = _tiny_generation_config(
            architecture["generation_config"], config, tiny
        )
    if architecture.get("preprocessor"):
        out["preprocessor"] = _tiny_preprocessor(architecture["preprocessor"], tiny)
    out["tokenizer"] = _tiny_tokenizer(architecture["tokenizer"], config, tiny)
    out.pop("max_shard_size", None)
    return out


def architecture_for(repo: str, size: str) -> dict:
    """``load_architecture(repo)``, made tiny when ``size == "tiny"``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    architecture = load_architecture(repo)
    return tiny_architecture(architecture) if size == "tiny" else architecture


# ---------------------------------------------------------------------------
# Building configs and counting parameters


def transformers_config(config: dict):
    """The transformers config object for a config.json dict, as ``from_pretrained`` builds it."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return CONFIG_MAPPING[config["model_type"]].from_dict(copy.deepcopy(config))


def model_class(config: dict):
    """The transformers class named by ``config["architectures"][0]``."""
    import transformers

    name = config["architectures"][0]
    cls = getattr(transformers, name, None)
    if cls is None:
        raise NotImplementedError(f"transformers {transformers.__version__} has no class {name}")
    return cls


def meta_model(config: dict, dtype=None):
    """Instantiate the model of ``config`` on the meta device: shapes only, no memory."""
    import torch

    cls = model_class(config)
    hf_config = transformers_config(config)
    with torch.device("meta"):
        if dtype is None:
            return cls._from_config(hf_config)
        return cls._from_config(hf_config, dtype=dtype)


def stored_tied_numel(model, architecture: dict) -> int:
    """Elements of tied weights that the published checkpoint nevertheless stores."""
    names = architecture.get("stored_tied_weights", {})
    return sum(model.get_parameter(name).numel() for name in names)


def count_parameters(repo: str, size: str) -> int:
    """Parameters in the checkpoint of ``repo`` at ``size`` ("full" or "tiny"), counted on meta.

    Counts what the published checkpoint stores: tied weights once, except where
    the Hub file stores the copy too (BLIP base: 247,414,076 stored against
    223,971,644 unique). DeepSeek-VL2 has no transformers class, so it is counted
    in closed form from its config, as its checkpoint stores it (the unused
    attention-pooling head of its vision tower included).
    """
    architecture = architecture_for(repo, size)
    if not is_buildable(repo):
        return deepseek_vl2_parameters(architecture)
    model = meta_model(architecture["config"])
    unique = sum(p.numel() for p in model.parameters())
    return unique + stored_tied_numel(model, architecture)


def deepseek_vl2_parameters(architecture: dict) -> int:
    """Closed-form parameter count of DeepSeek-VL2 from its config and the code defaults.

    Language model: DeepSeek-V2 with MLA (q_lora_rank null), one dense layer then
    MoE layers (routed experts + shared experts + gate), untied embeddings and
    lm_head. Vision: timm SigLIP ViT without class token, with a (stored, unused)
    attention-pooling head. Projector: 2x2 downsample then a 2-layer MLP. Plus the
    ``image_newline`` and ``view_seperator`` vectors of the "2D" tile tag.
    For deepseek-vl2-small this gives 16,148,349,504.
    """
    config = architecture["config"]
    lang = config["language_config"]
    vision = config["vision_config"]
    proj = {**architecture["defaults"]["projector_config"], **config["projector_config"]}

    hidden, vocab = lang["hidden_size"], lang["vocab_size"]
    heads = lang["num_attention_heads"]
    qk_head = lang["qk_nope_head_dim"] + lang["qk_rope_head_dim"]
    if lang.get("q_lora_rank"):
        raise NotImplementedError("closed form covers q_lora_rank null only")
    attention = (
        hidden * heads * qk_head  # q_proj
        + hidden * (lang["kv_lora_rank"] + lang["qk_rope_head_dim"])  # kv_a_proj_with_mqa
        + lang["kv_lora_rank"]  # kv_a_layernorm
        + lang["kv_lora_rank"] * heads * (lang["qk_nope_head_dim"] + lang["v_head_dim"])
        + heads * lang["v_head_dim"] * hidden  # o_proj
    )
    norms = 2 * hidden
    dense_mlp = 3 * hidden * lang["intermediate_size"]
    moe_width = lang["moe_intermediate_size"]
    moe_mlp = (
        lang["n_routed_experts"] * hidden  # gate
        + lang["n_routed_experts"] * 3 * hidden * moe_width
        + 3 * hidden * lang["n_shared_experts"] * moe_width
    )
    layers = lang["num_hidden_layers"]
    dense_layers = lang["first_k_dense_replace"]
    language = (
        2 * vocab * hidden  # embed_tokens + untied lm_head
        + hidden  # final norm
        + layers * (attention + norms)
        + dense_layers * dense_mlp
        + (layers - dense_layers) * moe_mlp
    )

    width, patch = vision["width"], vision["patch_size"]
    image_size = architecture["defaults"]["vision_config"]["image_size"]
    mlp_hidden = int(width * vision["mlp_ratio"])
    mlp = width * mlp_hidden + mlp_hidden + mlp_hidden * width + width
    block = 2 * width + (width * 3 * width + 3 * width) + (width * width + width) + 2 * width + mlp
    patches = (image_size // patch) ** 2
    trunk = (
        3 * patch * patch * width
        + width  # patch embedding conv + bias
        + patches * width  # position embedding, no class token
        + vision["layers"] * block
        + 2 * width  # final norm
    )
    attn_pool = (
        width  # latent query
        + (width * width + width)  # q
        + (width * 2 * width + 2 * width)  # kv
        + (width * width + width)  # proj
        + 2 * width  # norm
        + mlp
    )

    n_embed = proj["n_embed"]
    merged = proj["input_dim"] * proj["downsample_ratio"] ** 2
    projector = merged * n_embed + n_embed
    projector += (proj["depth"] - 1) * (n_embed * n_embed + n_embed)
    tile_vectors = len(architecture["defaults"]["tile_tag_parameters"]) * n_embed

    return language + trunk + attn_pool + projector + tile_vectors

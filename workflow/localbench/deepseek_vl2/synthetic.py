"""Random-weight DeepSeek-VL2 checkpoints in the published layout.

The tensors carry the published names and shapes (timm SigLIP with its unused
attention-pooling head, one tensor per expert, ``language.``/``vision.``/``projector.``
prefixes, four shards and an index), spelled out here from the config independently
of the model code, so loading a synthetic checkpoint exercises the same key mapping
as loading the real one. Shards are written one at a time straight with safetensors:
no model object is built, so the full 32 GB checkpoint needs one shard of memory.
"""

from __future__ import annotations

import json
from pathlib import Path

from localbench.deepseek_vl2.config import resolve
from localbench.fetch.tokenizer import build_tokenizer

SHARDS = 4
_WEIGHT_STD = 0.02

# The real tokenizer's length was not found; the synthetic one ends just after the
# last special token the reference names (<|Assistant|>, 100010 in the real vocabulary).
# Its regular part is a small byte-level BPE learned offline, padded with filler tokens.
_TOKENIZER_CHOICES = {"save_class": "PreTrainedTokenizerFast", "pre_tokenizer": "llama3"}


def published_tensors(config: dict) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor of a DeepSeek-VL2 checkpoint with ``config``, in the
    reference model's order: vision, projector, tile vectors, language model."""
    resolved = resolve(config)
    vision = resolved.vision
    width, mlp = vision["hidden_size"], vision["intermediate_size"]
    patch = vision["patch_size"]
    grid = (vision["image_size"] // patch) ** 2
    out: list[tuple[str, list[int]]] = [
        ("vision.pos_embed", [1, grid, width]),
        ("vision.patch_embed.proj.weight", [width, 3, patch, patch]),
        ("vision.patch_embed.proj.bias", [width]),
    ]
    for i in range(vision["num_hidden_layers"]):
        block = f"vision.blocks.{i}"
        out += [
            (f"{block}.norm1.weight", [width]),
            (f"{block}.norm1.bias", [width]),
            (f"{block}.attn.qkv.weight", [3 * width, width]),
            (f"{block}.attn.qkv.bias", [3 * width]),
            (f"{block}.attn.proj.weight", [width, width]),
            (f"{block}.attn.proj.bias", [width]),
            (f"{block}.norm2.weight", [width]),
            (f"{block}.norm2.bias", [width]),
            (f"{block}.mlp.fc1.weight", [mlp, width]),
            (f"{block}.mlp.fc1.bias", [mlp]),
            (f"{block}.mlp.fc2.weight", [width, mlp]),
            (f"{block}.mlp.fc2.bias", [width]),
        ]
    out += [("vision.norm.weight", [width]), ("vision.norm.bias", [width])]
    pool = "vision.attn_pool"
    out += [
        (f"{pool}.latent", [1, 1, width]),
        (f"{pool}.q.weight", [width, width]),
        (f"{pool}.q.bias", [width]),
        (f"{pool}.kv.weight", [2 * width, width]),
        (f"{pool}.kv.bias", [2 * width]),
        (f"{pool}.proj.weight", [width, width]),
        (f"{pool}.proj.bias", [width]),
        (f"{pool}.norm.weight", [width]),
        (f"{pool}.norm.bias", [width]),
        (f"{pool}.mlp.fc1.weight", [mlp, width]),
        (f"{pool}.mlp.fc1.bias", [mlp]),
        (f"{pool}.mlp.fc2.weight", [width, mlp]),
        (f"{pool}.mlp.fc2.bias", [width]),
    ]
    n_embed = resolved.n_embed
    out += [
        ("projector.layers.0.weight", [n_embed, resolved.projector_input]),
        ("projector.layers.0.bias", [n_embed]),
        ("projector.layers.2.weight", [n_embed, n_embed]),
        ("projector.layers.2.bias", [n_embed]),
        ("image_newline", [n_embed]),
        ("view_seperator", [n_embed]),
    ]
    lang = resolved.language
    hidden, vocab, heads = lang["hidden_size"], lang["vocab_size"], lang["num_attention_heads"]
    rope, nope, v_dim = lang["qk_rope_head_dim"], lang["qk_nope_head_dim"], lang["v_head_dim"]
    rank, moe = lang["kv_lora_rank"], lang["moe_intermediate_size"]
    shared = lang["n_shared_experts"] * moe
    out.append(("language.model.embed_tokens.weight", [vocab, hidden]))
    for i in range(lang["num_hidden_layers"]):
        layer = f"language.model.layers.{i}"
        out += [
            (f"{layer}.self_attn.q_proj.weight", [heads * (nope + rope), hidden]),
            (f"{layer}.self_attn.kv_a_proj_with_mqa.weight", [rank + rope, hidden]),
            (f"{layer}.self_attn.kv_a_layernorm.weight", [rank]),
            (f"{layer}.self_attn.kv_b_proj.weight", [heads * (nope + v_dim), rank]),
            (f"{layer}.self_attn.o_proj.weight", [hidden, heads * v_dim]),
        ]
        if i < lang["first_k_dense_replace"]:
            dense = lang["intermediate_size"]
            out += [
                (f"{layer}.mlp.gate_proj.weight", [dense, hidden]),
                (f"{layer}.mlp.up_proj.weight", [dense, hidden]),
                (f"{layer}.mlp.down_proj.weight", [hidden, dense]),
            ]
        else:
            for e in range(lang["n_routed_experts"]):
                expert = f"{layer}.mlp.experts.{e}"
                out += [
                    (f"{expert}.gate_proj.weight", [moe, hidden]),
                    (f"{expert}.up_proj.weight", [moe, hidden]),
                    (f"{expert}.down_proj.weight", [hidden, moe]),
                ]
            out += [
                (f"{layer}.mlp.gate.weight", [lang["n_routed_experts"], hidden]),
                (f"{layer}.mlp.shared_experts.gate_proj.weight", [shared, hidden]),
                (f"{layer}.mlp.shared_experts.up_proj.weight", [shared, hidden]),
                (f"{layer}.mlp.shared_experts.down_proj.weight", [hidden, shared]),
            ]
        out += [
            (f"{layer}.input_layernorm.weight", [hidden]),
            (f"{layer}.post_attention_layernorm.weight", [hidden]),
        ]
    out += [
        ("language.model.norm.weight", [hidden]),
        ("language.lm_head.weight", [vocab, hidden]),
    ]
    return out


def _numel(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _shard_plan(tensors: list[tuple[str, list[int]]], shards: int) -> list[list]:
    """Split the tensor list, in order, into ``shards`` runs of about equal bytes."""
    total = sum(_numel(shape) for _, shape in tensors)
    plan: list[list] = [[] for _ in range(shards)]
    seen = 0
    for name, shape in tensors:
        plan[min(shards - 1, seen * shards // total)].append((name, shape))
        seen += _numel(shape)
    return [run for run in plan if run]


def _random_tensor(name: str, shape: list[int], dtype, generator):
    """Normal(0, 0.02) weights, norms at one and biases at zero, like synthetic.py's."""
    import torch

    leaf = name.rsplit(".", 2)
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=dtype)
    if name.endswith(".weight") and "norm" in leaf[-2]:
        return torch.ones(shape, dtype=dtype)
    tensor = torch.empty(shape, dtype=dtype, device=generator.device)
    tensor.normal_(0.0, _WEIGHT_STD, generator=generator)
    return tensor.cpu()


def random_device() -> str:
    """Where the random numbers are drawn: a GPU draws the full 16B in seconds, where a
    CPU's normal_ (mostly single-threaded) takes minutes. Same seed, same device, same
    weights; a CPU build and a CUDA build differ."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _write_shards(config: dict, dtype_name: str, out_dir: Path, seed: int) -> tuple[int, int]:
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    tensors = published_tensors(config)
    plan = _shard_plan(tensors, SHARDS)
    generator = torch.Generator(device=random_device()).manual_seed(seed)
    weight_map: dict[str, str] = {}
    total_bytes = 0
    for number, run in enumerate(plan, start=1):
        shard = f"model-{number:05d}-of-{len(plan):05d}.safetensors"
        data = {name: _random_tensor(name, shape, dtype, generator) for name, shape in run}
        total_bytes += sum(t.numel() * t.element_size() for t in data.values())
        save_file(data, out_dir / shard, metadata={"format": "pt"})
        del data
        weight_map.update({name: shard for name, _ in run})
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(
        json.dumps(index, indent=2) + "\n", encoding="utf-8"
    )
    return sum(_numel(shape) for _, shape in tensors), total_bytes


def _tokenizer_spec(architecture: dict) -> dict:
    spec = {**architecture["tokenizer"], **_TOKENIZER_CHOICES}
    last_special = max(tid for tid, _, _ in spec["added_tokens"])
    spec["length"] = last_special + 1
    return spec


def build(architecture: dict, size: str, out_dir: Path, seed: int = 0) -> dict:
    """Write a random-weight checkpoint of the DeepSeek-VL2 ``architecture`` (already
    scaled to ``size``) into the empty folder ``out_dir``; return what build_synthetic_checkpoint
    returns for the other models."""

    out_dir = Path(out_dir)
    config = architecture["config"]
    dtype_name = config["torch_dtype"]
    parameters, _ = _write_shards(config, dtype_name, out_dir, seed)
    (out_dir / "config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    processor = architecture["preprocessor"]["processor_config"]
    (out_dir / "processor_config.json").write_text(
        json.dumps(processor, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    build_tokenizer(_tokenizer_spec(architecture)).save_pretrained(out_dir)
    return {
        "parameters": parameters,
        "checkpoint_dtype": dtype_name,
        "architecture": "DeepseekVL2 (localbench.deepseek_vl2)",
        "model_type": config["model_type"],
        "size": size,
        "random_numbers_drawn_on": random_device(),
    }

"""Loading the published DeepSeek-VL2 checkpoint by its own parameter names.

The checkpoint stores a timm SigLIP (``vision.blocks.i.attn.qkv``...) and one tensor
per expert; transformers' SigLIP splits q, k and v and its DeepSeek-V2 fuses the
experts of a layer into 3-D tensors. ``sources`` says, for every parameter of our
model, which checkpoint tensors make it and how; every shape is checked against the
safetensors headers before a byte is read, and any disagreement is one line naming
the tensor, the shard and the config key behind the expected shape.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from localbench.deepseek_vl2.config import ConfigMismatch

# Stored in the checkpoint, never used: the reference builds SigLIP with
# ignore_head=True, so the attention-pooling head is dead weight.
UNUSED_PREFIXES = ("vision.attn_pool.",)

_VISION_RENAMES = [
    (r"embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"post_layernorm\.(weight|bias)", r"norm.\1"),
]
_QKV = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")
_FUSED_EXPERTS = re.compile(
    r"(language\.model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)"
)

# Which config keys fix each kind of tensor's shape, for the mismatch message.
_SHAPE_KEYS = [
    ("embed_tokens", "language_config.vocab_size, hidden_size"),
    ("lm_head", "language_config.vocab_size, hidden_size"),
    ("experts", "language_config.n_routed_experts, moe_intermediate_size, hidden_size"),
    ("shared_experts", "language_config.n_shared_experts, moe_intermediate_size"),
    ("mlp.gate.", "language_config.n_routed_experts"),
    ("self_attn", "language_config attention sizes (heads, kv_lora_rank, *_head_dim)"),
    ("language.", "language_config.hidden_size, intermediate_size"),
    ("projector", "projector_config.n_embed, vision_config.width"),
    ("pos_embed", "vision_config.width and the 384-px tile / patch_size"),
    ("vision.", "vision_config.width, mlp_ratio, patch_size"),
    ("image_newline", "projector_config.n_embed"),
    ("view_seperator", "projector_config.n_embed"),
]


@dataclass(frozen=True)
class Source:
    """How one parameter of our model is made from checkpoint tensors.

    ``kind``: ``copy``; ``squeeze`` (drop a leading 1); ``chunk`` (part ``part`` of 3
    along dim 0, for q, k, v); ``gate_up`` (per expert cat(gate, up), stacked);
    ``stack`` (per expert tensors stacked).
    """

    keys: tuple[str, ...]
    kind: str = "copy"
    part: int = 0


def _vision_source(local: str) -> Source:
    if local == "embeddings.position_embedding.weight":
        return Source(("vision.pos_embed",), "squeeze")
    if match := _QKV.fullmatch(local):
        layer, which, field = match.groups()
        return Source((f"vision.blocks.{layer}.attn.qkv.{field}",), "chunk", "qkv".index(which))
    for pattern, published in _VISION_RENAMES:
        if re.fullmatch(pattern, local):
            return Source(("vision." + re.sub(pattern, published, local),))
    raise ConfigMismatch(f"no checkpoint tensor is known for the vision parameter {local!r}")


def sources(model: nn.Module) -> dict[str, Source]:
    """Checkpoint tensors behind every parameter of ``model`` (a ``DeepseekVL2``)."""
    out: dict[str, Source] = {}
    experts = model.config.language["n_routed_experts"]
    for name, _ in model.named_parameters():
        if name.startswith("vision."):
            inner = name[len("vision.") :]
            # Some transformers releases nest SigLIP under ``vision_model.``.
            inner = inner.removeprefix("vision_model.")
            out[name] = _vision_source(inner)
        elif match := _FUSED_EXPERTS.fullmatch(name):
            prefix, fused = match.groups()
            if fused == "gate_up_proj":
                keys = tuple(
                    f"{prefix}.{e}.{proj}.weight"
                    for e in range(experts)
                    for proj in ("gate_proj", "up_proj")
                )
                out[name] = Source(keys, "gate_up")
            else:
                keys = tuple(f"{prefix}.{e}.down_proj.weight" for e in range(experts))
                out[name] = Source(keys, "stack")
        else:
            # Same name in the checkpoint (the language model, projector, tile vectors;
            # per-expert tensors where a transformers release keeps them unfused).
            out[name] = Source((name,))
    return out


def _result_shape(source: Source, shapes: list[list[int]]) -> list[int]:
    first = shapes[0]
    if source.kind == "squeeze":
        return first[1:] if first and first[0] == 1 else [-1]
    if source.kind == "chunk":
        return [first[0] // 3, *first[1:]] if first[0] % 3 == 0 else [-1]
    if source.kind == "gate_up":
        return [len(shapes) // 2, 2 * first[0], *first[1:]]
    if source.kind == "stack":
        return [len(shapes), *first]
    return list(first)


def _shape_hint(key: str) -> str:
    for fragment, hint in _SHAPE_KEYS:
        if fragment in key:
            return hint
    return "config.json"


@dataclass
class CheckpointIndex:
    """Where each tensor of a checkpoint folder lives and its header shape and dtype."""

    folder: Path
    shard_of: dict[str, str]
    shape_of: dict[str, list[int]]
    dtype_of: dict[str, str]

    @classmethod
    def read(cls, folder: Path) -> CheckpointIndex:
        """Read every shard's header (no tensor data) and check it against the index file."""
        from safetensors import safe_open

        folder = Path(folder)
        shards = sorted(p.name for p in folder.glob("*.safetensors"))
        if not shards:
            raise FileNotFoundError(f"{folder}: no *.safetensors weights")
        shard_of, shape_of, dtype_of = {}, {}, {}
        for shard in shards:
            with safe_open(folder / shard, framework="pt") as handle:
                for key in handle.keys():
                    if key in shard_of:
                        raise ConfigMismatch(
                            f"{folder}: tensor {key} is stored in both {shard_of[key]} and {shard}"
                        )
                    piece = handle.get_slice(key)
                    shard_of[key] = shard
                    shape_of[key] = list(piece.get_shape())
                    dtype_of[key] = piece.get_dtype()
        index_path = folder / "model.safetensors.index.json"
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            for key, shard in weight_map.items():
                if shard_of.get(key) != shard:
                    raise ConfigMismatch(
                        f"{index_path}: {key} is listed in {shard} but stored in "
                        f"{shard_of.get(key, 'no shard')}"
                    )
        return cls(folder, shard_of, shape_of, dtype_of)


def check(model: nn.Module, index: CheckpointIndex, plan: dict[str, Source]) -> None:
    """Every parameter's tensors exist with shapes that make the parameter's shape, and
    every stored tensor is used (or known to be unused); ConfigMismatch otherwise."""
    params = dict(model.named_parameters())
    used: set[str] = set()
    for name, source in plan.items():
        missing = [key for key in source.keys if key not in index.shape_of]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ConfigMismatch(
                f"{index.folder}: the checkpoint has no tensor {missing[0]}{more}, which "
                f"{_shape_hint(missing[0])} of config.json call for"
            )
        shapes = [index.shape_of[key] for key in source.keys]
        if any(shape != shapes[0] for shape in shapes):
            raise ConfigMismatch(
                f"{index.folder}: tensors behind {name} differ in shape ({source.keys[0]})"
            )
        got = _result_shape(source, shapes)
        expected = list(params[name].shape)
        if got != expected:
            key = source.keys[0]
            raise ConfigMismatch(
                f"{index.folder}: {key} in {index.shard_of[key]} has shape {shapes[0]}, but "
                f"config.json ({_shape_hint(key)}) gives {expected} for {name}"
            )
        used.update(source.keys)
    extra = sorted(
        key for key in index.shape_of if key not in used and not key.startswith(UNUSED_PREFIXES)
    )
    if extra:
        raise ConfigMismatch(
            f"{index.folder}: the checkpoint has {len(extra)} tensor(s) this implementation "
            f"does not know, e.g. {extra[0]} in {index.shard_of[extra[0]]}"
        )


def _build(source: Source, tensors: list[torch.Tensor]) -> torch.Tensor:
    if source.kind == "squeeze":
        return tensors[0].squeeze(0)
    if source.kind == "chunk":
        return tensors[0].chunk(3, dim=0)[source.part]
    if source.kind == "gate_up":
        pairs = [torch.cat(tensors[i : i + 2], dim=0) for i in range(0, len(tensors), 2)]
        return torch.stack(pairs)
    if source.kind == "stack":
        return torch.stack(tensors)
    return tensors[0]


def load_into(model: nn.Module, folder: Path, dtype: torch.dtype, device: torch.device) -> dict:
    """Fill ``model``'s (meta) parameters from the checkpoint in ``folder`` on ``device``.

    Tensors are read straight to the device, one parameter at a time, so the
    largest extra copy is one fused expert tensor. Returns {"stored_tensors",
    "unused_tensors", "checkpoint_dtypes"}.
    """
    from safetensors import safe_open

    index = CheckpointIndex.read(folder)
    plan = sources(model)
    check(model, index, plan)
    target = "cpu" if device.type == "mps" else str(device)  # safetensors has no MPS target
    with contextlib.ExitStack() as stack:
        handles = {
            shard: stack.enter_context(
                safe_open(index.folder / shard, framework="pt", device=target)
            )
            for shard in sorted(set(index.shard_of.values()))
        }
        for name, source in plan.items():
            tensors = [handles[index.shard_of[key]].get_tensor(key) for key in source.keys]
            value = _build(source, tensors).to(device=device, dtype=dtype).contiguous()
            module_name, _, attribute = name.rpartition(".")
            module = model.get_submodule(module_name)
            module._parameters[attribute] = nn.Parameter(value, requires_grad=False)
    return {
        "stored_tensors": len(index.shape_of),
        "unused_tensors": sorted(k for k in index.shape_of if k.startswith(UNUSED_PREFIXES)),
        "checkpoint_dtypes": sorted(set(index.dtype_of.values())),
    }


@contextlib.contextmanager
def parameters_on_meta():
    """Create every module's parameters on the meta device (no memory, no init) while
    buffers (rotary frequencies, position ids) are computed for real, on the CPU."""
    original = nn.Module.register_parameter

    def register(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original

"""Synthetic checkpoints: the real architecture with seeded random weights, built offline.

A synthetic checkpoint folder looks like a Hub download of the seed repo: the
real transformers class and config (or its tiny variant), safetensors weights in
the published dtype (so the bytes on disk match the real checkpoint), a
generation config, and a tokenizer/processor whose special tokens carry the real
ids. It is built here from ``localbench.fetch.architectures`` without any download, so
benchmarks can run on machines that cannot reach the Hub, and tests can run the
whole pipeline on tiny models.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

from localbench.fetch import architectures
from localbench.fetch.reference import is_buildable
from localbench.fetch.tokenizer import build_tokenizer

# Random weights: normal(0, 0.02) like the models' own initializer_range; norms
# start at one and biases at zero, so activations stay small and finite in fp16.
_WEIGHT_STD = 0.02
_DEFAULT_MAX_SHARD_SIZE = "5GB"

# ---------------------------------------------------------------------------
# Processors


def _processor_class(architecture: dict) -> str | None:
    preprocessor = architecture.get("preprocessor") or {}
    for part in ("processor_config", "preprocessor_config"):
        if (preprocessor.get(part) or {}).get("processor_class"):
            return preprocessor[part]["processor_class"]
    return None


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_processor(architecture: dict, tokenizer, out_dir: Path):
    """Save the tokenizer and the processor settings into ``out_dir``; return the processor.

    The processor files are written in the layout of the Hub repo
    (preprocessor_config.json, plus processor_config.json where the repo has
    one) rather than by ``processor.save_pretrained``: newer transformers nest
    them differently, and every transformers 5 release reads the Hub layout.
    The processor is still built here once, so a broken combination fails now.
    """
    import transformers

    tokenizer.save_pretrained(out_dir)
    name = _processor_class(architecture)
    if name is None:
        return tokenizer
    preprocessor = architecture["preprocessor"]
    settings = preprocessor["preprocessor_config"]
    _write_json(out_dir / "preprocessor_config.json", settings)
    if preprocessor.get("processor_config"):
        _write_json(out_dir / "processor_config.json", preprocessor["processor_config"])
    # transformers picks the image-processor backend (torchvision or PIL) that is installed.
    if "feature_extractor_type" in settings:
        main = transformers.AutoFeatureExtractor.from_pretrained(out_dir, local_files_only=True)
    else:
        main = transformers.AutoImageProcessor.from_pretrained(out_dir, local_files_only=True)
    extra = {
        key: value
        for key, value in (preprocessor.get("processor_config") or {}).items()
        if key != "processor_class"
    }
    return getattr(transformers, name)(main, tokenizer, **extra)


# ---------------------------------------------------------------------------
# Weights


def _is_norm(module) -> bool:
    import torch

    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm)
    return isinstance(module, norms) or "Norm" in type(module).__name__


def _materialize(model, seed: int) -> None:
    """Give every meta parameter CPU storage in its dtype and fill it with seeded values.

    One pass, one copy of the weights: tied parameters (one Parameter object in
    two modules) get the same new tensor. transformers' own initialisation is
    skipped: on CPU it took about three times as long (20 s against 8 s for Qwen2.5-1.5B).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    replaced: dict[int, torch.nn.Parameter] = {}
    originals = []  # keeps the meta parameters alive, so their ids stay unique
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in replaced:
                data = torch.empty(param.shape, dtype=param.dtype, device="cpu")
                if name.endswith("bias"):
                    data.zero_()
                elif _is_norm(module) and name == "weight":
                    data.fill_(1.0)
                else:
                    data.normal_(0.0, _WEIGHT_STD, generator=generator)
                originals.append(param)
                replaced[id(param)] = torch.nn.Parameter(data, requires_grad=False)
            module._parameters[name] = replaced[id(param)]


def _instantiate(config: dict, dtype, seed: int):
    """The model of ``config`` with random weights in ``dtype``, built via the meta device."""
    model = architectures.meta_model(config, dtype=dtype)
    _materialize(model, seed)
    # Non-persistent buffers (rotary frequencies and the like) stay on meta: they
    # are not saved, and from_pretrained recomputes them when the folder is loaded.
    return model


def _store_tied_copies(out_dir: Path, names: dict[str, str]) -> None:
    """Add tied weights the Hub checkpoint stores although transformers saves them once."""
    if not names:
        return
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = out_dir / "model.safetensors"
    if not path.is_file():
        raise NotImplementedError("stored tied weights are supported for unsharded checkpoints")
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for name, source in names.items():
        tensors.setdefault(name, tensors[source].clone())
    tmp = path.with_name(".model.safetensors.tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def _save_generation_config(model, architecture: dict, out_dir: Path) -> None:
    """Write the published generation_config.json (save_pretrained wrote one from the config)."""
    from transformers import GenerationConfig

    if architecture.get("generation_config"):
        generation = GenerationConfig.from_dict(dict(architecture["generation_config"]))
    elif not (out_dir / "generation_config.json").is_file():
        generation = GenerationConfig.from_model_config(model.config)
    else:
        return
    generation.save_pretrained(out_dir)


def build_synthetic_checkpoint(repo: str, size: str, out_dir: Path, seed: int = 0) -> dict:
    """Write a random-weight checkpoint of ``repo`` at ``size`` ("full"/"tiny") to ``out_dir``.

    The folder holds config.json, generation_config.json, safetensors weights in
    the published dtype, and the tokenizer or processor files, so that
    ``localbench.engine.loading.load_model`` (or any ``from_pretrained``) reads it
    offline. Returns ``{"parameters", "checkpoint_dtype", "architecture",
    "model_type", "size"}``. DeepSeek-VL2, which has no transformers class, is
    written tensor by tensor in its published layout (``localbench.deepseek_vl2``).
    """
    import torch

    out_dir = Path(out_dir)
    architecture = architectures.architecture_for(repo, size)
    config = architecture["config"]
    dtype_name = config["torch_dtype"]
    # Leftover shards from an earlier build would be loaded alongside the new ones.
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: not empty; synthetic checkpoints go into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not is_buildable(repo):
        from localbench.deepseek_vl2 import synthetic as deepseek_vl2_synthetic

        return deepseek_vl2_synthetic.build(architecture, size, out_dir, seed)

    # Seeded so the same (repo, size, seed) always gives the same weights.
    model = _instantiate(config, getattr(torch, dtype_name), seed)
    parameters = sum(p.numel() for p in model.parameters())
    parameters += architectures.stored_tied_numel(model, architecture)
    # transformers 5 always writes safetensors (the safe_serialization switch is gone).
    model.save_pretrained(
        out_dir, max_shard_size=architecture.get("max_shard_size", _DEFAULT_MAX_SHARD_SIZE)
    )
    _save_generation_config(model, architecture, out_dir)
    model_type = model.config.model_type
    del model
    gc.collect()
    _store_tied_copies(out_dir, architecture.get("stored_tied_weights", {}))

    tokenizer = build_tokenizer(architecture["tokenizer"])
    _save_processor(architecture, tokenizer, out_dir)
    return {
        "parameters": parameters,
        "checkpoint_dtype": dtype_name,
        "architecture": config["architectures"][0],
        "model_type": model_type,
        "size": size,
    }

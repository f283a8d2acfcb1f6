"""Load a checkpoint folder for inference: one code path for Hub downloads and synthetic copies.

Weights are read from safetensors only (``use_safetensors=True``): pickle
checkpoints can run code when unpickled, so they are never loaded. Remote code
is never trusted and nothing is fetched from the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from localbench.engine.generation import quiet_length_clash

# Task -> transformers auto class. The auto classes resolve the concrete class
# (Qwen2ForCausalLM, BlipForConditionalGeneration, Blip2ForConditionalGeneration,
# WhisperForConditionalGeneration) from the folder's config.json.
TASK_AUTO_MODEL: dict[str, str] = {
    "text-generation": "AutoModelForCausalLM",
    "image-captioning": "AutoModelForImageTextToText",
    "visual-question-answering": "AutoModelForImageTextToText",
    "speech-recognition": "AutoModelForSpeechSeq2Seq",
    # DeepSeek-VL2 has no transformers class: the project's own (localbench.deepseek_vl2).
    "multimodal": "localbench.deepseek_vl2",
}

# Tasks whose inputs are text only get a tokenizer; the others a processor.
TEXT_TASKS = {"text-generation"}


class MissingSafetensors(FileNotFoundError):
    """A checkpoint folder without safetensors weights."""


class UnsupportedTask(ValueError):
    """A task that ``load_model`` has no model class for."""


@dataclass
class LoadedModel:
    """A model ready for inference and what turns raw inputs into its tensors."""

    model: Any
    processor: Any  # the tokenizer for text models, the processor otherwise
    task: str
    dtype: torch.dtype
    device: torch.device


def require_safetensors(model_dir: Path) -> list[Path]:
    """The safetensors files of ``model_dir``; MissingSafetensors if there are none."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in Path(model_dir).glob("*.bin")) + sorted(
            p.name for p in Path(model_dir).glob("*.pt")
        )
        also = f" (found {', '.join(found)}; pickle weights are never loaded)" if found else ""
        raise MissingSafetensors(f"{model_dir}: no *.safetensors weights{also}")
    return files


def _auto_class(task: str):
    import transformers

    if task not in TASK_AUTO_MODEL:
        raise UnsupportedTask(
            f"no model class for task {task!r}; supported: {', '.join(sorted(TASK_AUTO_MODEL))}"
        )
    return getattr(transformers, TASK_AUTO_MODEL[task])


def _declared_class(model_dir: Path):
    import transformers

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    name = (config.get("architectures") or [""])[0]
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise UnsupportedTask(f"{model_dir}: transformers has no class {name!r} for this model")
    return cls


def _from_pretrained_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    # transformers 5 spells it ``dtype`` (``torch_dtype`` is deprecated since 4.56).
    return {
        "dtype": dtype,
        "use_safetensors": True,
        "trust_remote_code": False,
        "local_files_only": True,
    }


def load_model(model_dir: Path, task: str, dtype: torch.dtype, device: torch.device) -> LoadedModel:
    """Load the model and its tokenizer/processor from ``model_dir`` for ``task``.

    The same call serves Hub snapshots and synthetic checkpoints. The model is
    put on ``device`` in eval mode. Raises MissingSafetensors when the folder has
    no safetensors weights and UnsupportedTask for an unknown task.
    """
    import transformers

    model_dir = Path(model_dir)
    device = torch.device(device)
    require_safetensors(model_dir)
    quiet_length_clash()  # the model's generate() calls always pass a token budget
    if task == "multimodal":
        from localbench.deepseek_vl2.loading import load

        model, processor = load(model_dir, dtype, device)
        return LoadedModel(model=model, processor=processor, task=task, dtype=dtype, device=device)
    auto_class = _auto_class(task)
    kwargs = _from_pretrained_kwargs(dtype)
    try:
        model = auto_class.from_pretrained(model_dir, **kwargs)
    except ValueError as error:
        # Auto mappings differ between transformers releases (a model type may be
        # missing from one task's mapping); the class config.json names still fits.
        if "Unrecognized configuration class" not in str(error):
            raise
        model = _declared_class(model_dir).from_pretrained(model_dir, **kwargs)
    model = model.to(device).eval()
    loader = transformers.AutoTokenizer if task in TEXT_TASKS else transformers.AutoProcessor
    processor = loader.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    return LoadedModel(model=model, processor=processor, task=task, dtype=dtype, device=device)

"""One call from a checkpoint folder (Hub download or synthetic) to a model ready to run."""

from __future__ import annotations

from pathlib import Path

import torch

from localbench.deepseek_vl2.config import ConfigMismatch, read_config, resolve
from localbench.deepseek_vl2.model import DeepseekVL2
from localbench.deepseek_vl2.processor import DeepseekVL2Processor
from localbench.deepseek_vl2.weights import load_into, parameters_on_meta


def load(model_dir: Path, dtype: torch.dtype, device: torch.device):
    """The model (eval mode, on ``device`` in ``dtype``) and its processor.

    The config is checked first, then every tensor's shape against the safetensors
    headers, before any weights are read; ConfigMismatch names what disagrees.
    """
    model_dir = Path(model_dir)
    config = resolve(read_config(model_dir), str(model_dir / "config.json"))
    with parameters_on_meta():
        model = DeepseekVL2(config)
    stored = load_into(model, model_dir, dtype, device)
    if stored["checkpoint_dtypes"] != [_safetensors_dtype(config.checkpoint_dtype)]:
        raise ConfigMismatch(
            f"{model_dir}: config.json says torch_dtype={config.checkpoint_dtype}, the "
            f"safetensors headers say {', '.join(stored['checkpoint_dtypes'])}"
        )
    # Buffers (rotary frequencies, position ids) were computed on the CPU.
    model = model.to(device).eval()
    model.checkpoint_info = stored
    processor = DeepseekVL2Processor.from_folder(model_dir, config)
    return model, processor


def _safetensors_dtype(name: str) -> str:
    return {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(name, name)

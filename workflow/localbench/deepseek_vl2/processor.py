"""Inputs of DeepSeek-VL2: the "deepseek" conversation format and the tiled image views.

A one-turn prompt is BOS, then ``<|User|>: {content}\\n\\n<|Assistant|>:`` where the
content holds ``<image>`` where the picture goes. The text is split at ``<image>``,
each piece tokenised without special tokens, and each ``<image>`` is replaced by as
many image-token ids as its tiling yields embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from localbench.deepseek_vl2 import tiling as tiling_lib
from localbench.deepseek_vl2.config import ConfigMismatch, VL2Config

IMAGE_PLACEHOLDER = "<image>"
USER_ROLE = "<|User|>"
ASSISTANT_ROLE = "<|Assistant|>"
TURN_SEPARATOR = "\n\n"


def conversation_prompt(question: str) -> str:
    """One user turn with one image, ending where the assistant's answer starts."""
    return f"{USER_ROLE}: {IMAGE_PLACEHOLDER}\n{question}{TURN_SEPARATOR}{ASSISTANT_ROLE}:"


@dataclass
class VL2Inputs:
    """One request: prompt ids with image slots, the views and their tiling."""

    input_ids: torch.Tensor  # (1, n)
    pixel_values: torch.Tensor  # (1 + w*h, 3, tile, tile)
    tiling: tiling_lib.Tiling
    image_tokens: int

    def to(self, device: torch.device) -> VL2Inputs:
        """The same inputs on ``device``."""
        return VL2Inputs(
            self.input_ids.to(device), self.pixel_values.to(device), self.tiling, self.image_tokens
        )


class DeepseekVL2Processor:
    """Tokenizer plus image tiling, as the reference processor (single image, no batching)."""

    def __init__(self, tokenizer, config: VL2Config, settings: dict):
        self.tokenizer = tokenizer
        self.config = config
        self.mean = np.asarray(settings.get("image_mean", (0.5, 0.5, 0.5)), dtype=np.float32)
        self.std = np.asarray(settings.get("image_std", (0.5, 0.5, 0.5)), dtype=np.float32)
        candidates = settings.get("candidate_resolutions") or config.candidate_resolutions
        self.candidates = [tuple(pair) for pair in candidates]
        self.side = tiling_lib.tokens_per_side(
            config.tile_size, config.patch_size, config.downsample_ratio
        )
        token = settings.get("image_token", IMAGE_PLACEHOLDER)
        self.image_token_id = tokenizer.convert_tokens_to_ids(token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ConfigMismatch(f"the tokenizer has no image token {token!r}")
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(tokenizer, name) is None:
                raise ConfigMismatch(f"the tokenizer has no {name[:3].upper()} token")

    @classmethod
    def from_folder(cls, folder: Path, config: VL2Config) -> DeepseekVL2Processor:
        """Tokenizer (tokenizer.json) and processor_config.json of a checkpoint folder."""
        from transformers import PreTrainedTokenizerFast

        folder = Path(folder)
        # tokenizer.json read directly: AutoTokenizer would look the model type up in
        # transformers, which does not know deepseek_vl_v2.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
        path = folder / "processor_config.json"
        settings = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        for key, expected in (
            ("patch_size", config.patch_size),
            ("downsample_ratio", config.downsample_ratio),
        ):
            if key in settings and settings[key] != expected:
                raise ConfigMismatch(
                    f"{path}: {key}={settings[key]} differs from config.json ({expected})"
                )
        return cls(tokenizer, config, settings)

    def _pixels(self, view) -> np.ndarray:
        array = np.asarray(view, dtype=np.float32) / 255.0
        return ((array - self.mean) / self.std).transpose(2, 0, 1)

    def __call__(self, image, question: str) -> VL2Inputs:
        """Prompt ids and pixel values for ``question`` about ``image`` (a PIL image)."""
        chosen = tiling_lib.select_tiling(image.size, self.candidates, self.config.tile_size)
        views = tiling_lib.tile_views(image, chosen)
        pixel_values = torch.from_numpy(np.stack([self._pixels(v) for v in views]))
        image_tokens = tiling_lib.image_token_count(chosen, self.side)
        before, after = conversation_prompt(question).split(IMAGE_PLACEHOLDER)
        encode = self.tokenizer.encode
        ids = [self.tokenizer.bos_token_id]
        ids += encode(before, add_special_tokens=False)
        ids += [self.image_token_id] * image_tokens
        ids += encode(after, add_special_tokens=False)
        return VL2Inputs(torch.tensor([ids]), pixel_values, chosen, image_tokens)

    def decode(self, token_ids, **kwargs) -> str:
        """Text of generated ids."""
        return self.tokenizer.decode(token_ids, **kwargs)

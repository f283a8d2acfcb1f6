"""Fixed benchmark inputs: the same prompt, image and audio on every machine.

They are generated, not downloaded, from fixed seeds, so two machines measure the same
work. Their content does not matter for speed: the prompt has a fixed token count, the
image a fixed size, the audio a fixed length.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

PASSAGE = (
    "Local language models let people keep their data on their own machine. "
    "This benchmark measures how quickly a model reads a prompt and writes an answer, "
    "how much memory it needs, and how steady those numbers are from run to run. "
)
QUESTION = "What is shown in this picture?"


def prompt_ids(tokenizer, length: int) -> torch.Tensor:
    """Exactly ``length`` token ids of English text, shape (1, length)."""
    ids: list[int] = []
    piece = tokenizer(PASSAGE, add_special_tokens=False)["input_ids"]
    if not piece:
        raise ValueError("the tokenizer turned the benchmark passage into no tokens")
    while len(ids) < length:
        ids.extend(piece)
    return torch.tensor([ids[:length]], dtype=torch.long)


def benchmark_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture: a colour gradient with shapes and some noise."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack(
        [
            np.broadcast_to(x, (height, width)),
            np.broadcast_to(y, (height, width)),
            np.full((height, width), 128.0, dtype=np.float32),
        ],
        axis=-1,
    )
    pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.1, height * 0.2, width * 0.4, height * 0.7), fill=(220, 40, 40))
    draw.rectangle((width * 0.55, height * 0.3, width * 0.9, height * 0.8), fill=(40, 60, 200))
    return image


def benchmark_audio(seconds: float, sampling_rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like signal: a gliding voiced tone with syllable-rate bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate), dtype=np.float32) / sampling_rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sampling_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    signal = 0.1 * voiced * envelope + 0.005 * rng.standard_normal(t.shape)
    return signal.astype(np.float32)

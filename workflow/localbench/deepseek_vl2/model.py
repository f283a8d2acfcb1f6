"""The DeepSeek-VL2 network: SigLIP tower, 2x2 downsampling MLP projector, tile-layout
embeddings, and the DeepSeek-V2 MoE language model that reads them.

Submodule and parameter names follow the published checkpoint (``vision``,
``projector.layers``, ``language``, ``image_newline``, ``view_seperator``), so the
key mapping in ``weights`` only has to deal with what transformers names differently
inside the towers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from localbench.deepseek_vl2.config import VL2Config
from localbench.deepseek_vl2.tiling import Tiling


class Projector(nn.Module):
    """Merge each 2x2 block of vision tokens into one, then a 2-layer GELU MLP."""

    def __init__(self, config: VL2Config):
        super().__init__()
        self.downsample_ratio = config.downsample_ratio
        # Indices 0 and 2 hold the weights, as in the checkpoint; 1 is the (exact) GELU.
        self.layers = nn.Sequential(
            nn.Linear(config.projector_input, config.n_embed),
            nn.GELU(),
            nn.Linear(config.n_embed, config.n_embed),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(tiles, side*side, width) vision tokens -> (tiles, merged tokens, n_embed)."""
        tiles, tokens, width = features.shape
        side = int(tokens**0.5)
        if side * side != tokens:
            raise ValueError(f"{tokens} vision tokens do not form a square grid")
        grid = features.transpose(1, 2).reshape(tiles, width, side, side)
        # Pad bottom and right (in feature space) up to a multiple of the merge ratio.
        pad = -side % self.downsample_ratio
        grid = F.pad(grid, (0, pad, 0, pad))
        # Channel-major merge, feature index c*4 + (di*2 + dj), as the reference's unfold.
        merged = F.pixel_unshuffle(grid, self.downsample_ratio)
        return self.layers(merged.flatten(2).transpose(1, 2))


class DeepseekVL2(nn.Module):
    """DeepSeek-VL2 for generation: ``embed`` builds the prompt embeddings with the image
    features in place; ``language.generate(inputs_embeds=...)`` writes the answer."""

    def __init__(self, config: VL2Config):
        from transformers import (
            DeepseekV2Config,
            DeepseekV2ForCausalLM,
            SiglipVisionConfig,
            SiglipVisionModel,
        )

        super().__init__()
        self.config = config
        self.vision = SiglipVisionModel._from_config(SiglipVisionConfig(**config.vision))
        self.projector = Projector(config)
        self.language = DeepseekV2ForCausalLM._from_config(DeepseekV2Config(**config.language))
        self.image_newline = nn.Parameter(torch.empty(config.n_embed))
        self.view_seperator = nn.Parameter(torch.empty(config.n_embed))

    @property
    def device(self) -> torch.device:
        return self.image_newline.device

    @property
    def dtype(self) -> torch.dtype:
        return self.image_newline.dtype

    def image_embeddings(self, pixel_values: torch.Tensor, tiling: Tiling) -> torch.Tensor:
        """Embeddings of one image's views, in prompt order (global, separator, local grid).

        ``pixel_values`` is (1 + w*h, 3, tile, tile): the global view, then the local
        tiles row by row. Every row of tokens ends with ``image_newline``.
        """
        features = self.vision(pixel_values=pixel_values).last_hidden_state
        tokens = self.projector(features)  # (tiles, side*side, n_embed)
        side = int(tokens.shape[1] ** 0.5)
        dim = tokens.shape[-1]
        newline = self.image_newline.to(tokens.dtype)

        def with_newlines(grid: torch.Tensor) -> torch.Tensor:
            rows = grid.shape[0]
            return torch.cat([grid, newline.expand(rows, 1, dim)], dim=1).reshape(-1, dim)

        global_view = with_newlines(tokens[0].reshape(side, side, dim))
        h, w = tiling.height_tiles, tiling.width_tiles
        local = tokens[1:].reshape(h, w, side, side, dim)
        # Tiles row-major -> one (h*side) x (w*side) grid of tokens.
        local = local.permute(0, 2, 1, 3, 4).reshape(h * side, w * side, dim)
        separator = self.view_seperator.to(tokens.dtype)[None]
        return torch.cat([global_view, separator, with_newlines(local)])

    def embed(
        self,
        input_ids: torch.Tensor,
        image_token_id: int,
        pixel_values: torch.Tensor | None = None,
        tiling: Tiling | None = None,
    ) -> torch.Tensor:
        """Token embeddings of ``input_ids`` (1, n) with the image's embeddings written
        into its ``image_token_id`` slots, in order."""
        embeds = self.language.get_input_embeddings()(input_ids)
        slots = input_ids == image_token_id
        if pixel_values is None:
            if slots.any():
                raise ValueError("the prompt has image tokens but no image was given")
            return embeds
        image = self.image_embeddings(pixel_values.to(self.dtype), tiling).to(embeds.dtype)
        if int(slots.sum()) != image.shape[0]:
            raise ValueError(
                f"the prompt has {int(slots.sum())} image tokens, the image gives "
                f"{image.shape[0]} embeddings"
            )
        return embeds.masked_scatter(slots[..., None], image)

"""Dynamic tiling of DeepSeek-VL2: which grid of 384-px tiles an image gets, the views
cut from it, and how many image tokens they become.

An image is shown to the model twice: once whole (the global view, padded to one
tile) and once as a grid of tiles (the local views) at the candidate resolution that
keeps the most of its pixels. Each tile becomes a 27x27 SigLIP grid, merged 2x2 into
14x14 tokens; every token row ends with an ``image_newline`` embedding and one
``view_seperator`` embedding sits between the two views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Pad colour of ImageOps.pad in the reference processor: mid grey, so padding is
# zero after the (x - 0.5) / 0.5 normalisation.
PAD_COLOR = (127, 127, 127)


@dataclass(frozen=True)
class Tiling:
    """A grid of ``width_tiles`` x ``height_tiles`` local tiles of ``tile_size`` px."""

    width_tiles: int
    height_tiles: int
    tile_size: int

    @property
    def resolution(self) -> tuple[int, int]:
        """(width, height) in pixels the image is padded to before it is cut."""
        return self.width_tiles * self.tile_size, self.height_tiles * self.tile_size

    @property
    def tiles(self) -> int:
        """Number of tiles given to the vision tower: the global view plus the locals."""
        return 1 + self.width_tiles * self.height_tiles


def tokens_per_side(tile_size: int, patch_size: int, downsample_ratio: int) -> int:
    """Merged tokens along one side of a tile: 384 px / 14 = 27 patches, padded to 28, / 2 = 14."""
    return math.ceil((tile_size // patch_size) / downsample_ratio)


def image_token_count(tiling: Tiling, side: int) -> int:
    """Image tokens of one image: global view, separator, local grid, newlines included.

    ``side`` is ``tokens_per_side``; with 14: 14 x 15 + 1 + (14 h) x (14 w + 1), so a
    single tile gives 421 and the 1 x 9 column 2,101.
    """
    global_view = side * (side + 1)
    local_view = (side * tiling.height_tiles) * (side * tiling.width_tiles + 1)
    return global_view + 1 + local_view


def select_tiling(
    image_size: tuple[int, int], candidates: list[tuple[int, int]], tile_size: int
) -> Tiling:
    """The candidate (width, height) that keeps the most pixels of an image of ``image_size``.

    Each candidate scales the image to fit inside it; the one whose scaled image
    has the most pixels (capped at the original's) wins, ties go to the one that
    wastes the least area, and exact ties to the earlier candidate.
    """
    width, height = image_size
    best, best_effective, best_waste = None, -1, math.inf
    for cand_width, cand_height in candidates:
        if cand_width % tile_size or cand_height % tile_size:
            raise ValueError(
                f"candidate resolution {cand_width}x{cand_height} is not a multiple of the "
                f"{tile_size}-px tile"
            )
        scale = min(cand_width / width, cand_height / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = cand_width * cand_height - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (cand_width, cand_height), effective, waste
    if best is None:
        raise ValueError("no candidate resolutions")
    return Tiling(best[0] // tile_size, best[1] // tile_size, tile_size)


def tile_views(image, tiling: Tiling) -> list:
    """The views of ``image`` (a PIL image): the global view first, then the local tiles
    row by row, each a ``tile_size`` square PIL image."""
    from PIL import ImageOps

    image = image.convert("RGB")
    size = tiling.tile_size
    views = [ImageOps.pad(image, (size, size), color=PAD_COLOR)]
    padded = ImageOps.pad(image, tiling.resolution, color=PAD_COLOR)
    for row in range(tiling.height_tiles):
        for col in range(tiling.width_tiles):
            box = (col * size, row * size, (col + 1) * size, (row + 1) * size)
            views.append(padded.crop(box))
    return views

"""A 2D image as corpus images: a whole view and tiles at two scales.

- Whole view: the image reduced (area averaging; masks nearest) so that its longest side is at
  most ``2 * tile``, padded to a square.
- Tiles: ``tile`` and ``tile / 2`` pixel squares at native resolution, without overlap, for
  every scale at which the image is at least two tiles high and wide; flat (background) tiles
  are left out (``geometry.is_flat``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from medfoundry.corpus.geometry import is_flat, pad_square, tile_positions

__all__ = ["image_views"]


def image_views(
    pixels: np.ndarray, tile: int, mask: np.ndarray | None = None
) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(name suffix, pixels, mask or None)`` of the whole view and the tiles of ``pixels``.

    A mask (e.g. per-pixel classes) is cut alike; on a whole view that needs padding it is
    dropped (padding has no label).
    """
    height, width = pixels.shape[:2]
    scale = min(1.0, 2 * tile / max(height, width))
    whole, whole_mask = pixels, mask
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        whole = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
        if mask is not None:
            whole_mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    if whole.shape[0] != whole.shape[1]:
        whole, whole_mask = pad_square(whole)[0], None
    yield "", whole, whole_mask
    for side in (tile, tile // 2):
        if min(height, width) < 2 * side:
            continue
        for y, x in tile_positions(height, width, side, stride=side):
            crop = pixels[y : y + side, x : x + side]
            if not is_flat(crop):
                yield (
                    f"_t{side}_y{y:04d}_x{x:04d}",
                    crop,
                    None if mask is None else mask[y : y + side, x : x + side],
                )

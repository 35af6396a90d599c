"""Cutting images: square padding, foreground boxes, in-plane resampling, tiles."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

__all__ = ["foreground_box", "is_flat", "pad_square", "resample_square_pixels", "tile_positions"]

FLAT_STD = 4.0
"""A tile whose 8-bit values vary less than this (standard deviation) is empty background."""


def pad_square(array: np.ndarray, value: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad ``(H, W[, C])`` to a centred square; returns it and the ``(top, left)`` offset.

    Slices of one volume differ in shape by plane; padding (rather than stretching) keeps
    anatomy undistorted and stops the shape from giving the plane away.
    """
    height, width = array.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    out = np.full((side, side, *array.shape[2:]), value, array.dtype)
    out[top : top + height, left : left + width] = array
    return out, (top, left)


def foreground_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of ``mask``'s true voxels, widened by ``margin`` (clipped to the array)."""
    where = np.nonzero(mask)
    if not where[0].size:
        return tuple(slice(0, n) for n in mask.shape)
    return tuple(
        slice(max(int(w.min()) - margin, 0), min(int(w.max()) + margin + 1, n))
        for w, n in zip(where, mask.shape, strict=True)
    )


def resample_square_pixels(array: np.ndarray, row_mm: float, col_mm: float, *, order: int) -> np.ndarray:
    """Resample ``(H, W)`` so that rows and columns have the smaller of the two spacings.

    ``order`` 1 (linear) for images, 0 (nearest) for labels and coordinates.
    """
    target = min(row_mm, col_mm)
    factors = (row_mm / target, col_mm / target)
    if max(abs(f - 1) for f in factors) < 0.01:
        return array
    out: np.ndarray = ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)
    return out


def tile_positions(height: int, width: int, size: int, *, stride: int) -> Iterator[tuple[int, int]]:
    """Top-left corners of ``size`` tiles every ``stride`` pixels that fit inside the image."""
    for y in range(0, height - size + 1, stride):
        for x in range(0, width - size + 1, stride):
            yield y, x


def is_flat(tile: np.ndarray) -> bool:
    """True for an (almost) uniform 8-bit tile: slide or detector background, padding."""
    return float(tile.std()) < FLAT_STD

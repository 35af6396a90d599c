"""A volume cut into 2D slices along its three axes, with its label volumes cut alike.

The volume is in canonical RAS+ orientation (``medfoundry.data.volumes``); every slice is
shown the radiological way (``volume_slice``), resampled in-plane to square pixels, and padded
to a square. Slices whose foreground covers less than ``min_foreground`` of the slice are
skipped (near-empty slices at the ends of a volume).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from medfoundry.corpus.geometry import pad_square, resample_square_pixels
from medfoundry.data.volumes import AXES, plane_spacing, volume_slice

__all__ = ["VolumeSlice", "nonempty_range", "volume_slices"]


@dataclass
class VolumeSlice:
    """One slice: 8-bit image, label and coordinate maps cut the same way.

    Attributes:
        plane: ``axial``, ``coronal`` or ``sagittal``.
        index: Slice index along the plane's canonical axis.
        first: First non-empty slice index along that axis.
        last: Last non-empty slice index along that axis.
        pixels: ``(S, S)`` uint8, padded with 0.
        maps: Label or coordinate maps, ``(S, S)``, padded with 0 (nearest interpolation).
        inside: ``(S, S)`` bool, False on the padding.
    """

    plane: str
    index: int
    first: int
    last: int
    pixels: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    inside: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))


def nonempty_range(foreground: np.ndarray, axis: int, min_foreground: float) -> tuple[int, int]:
    """First and last slice index along ``axis`` whose foreground share is at least ``min_foreground``."""
    other = tuple(i for i in range(3) if i != axis)
    shares = foreground.mean(axis=other)
    kept = np.nonzero(shares >= min_foreground)[0]
    if not kept.size:
        return 0, -1
    return int(kept[0]), int(kept[-1])


def volume_slices(
    image: np.ndarray,
    zooms: tuple[float, float, float],
    foreground: np.ndarray,
    *,
    maps: dict[str, np.ndarray] | None = None,
    planes: Sequence[str] = ("axial", "coronal", "sagittal"),
    every: int = 1,
    min_foreground: float = 0.05,
    max_anisotropy: float = 3.0,
    min_side: int = 32,
) -> Iterator[VolumeSlice]:
    """Slices of a canonical volume.

    Args:
        image: ``(X, Y, Z)`` uint8 volume.
        zooms: Voxel sizes in mm.
        foreground: ``(X, Y, Z)`` bool; decides which slices are near-empty.
        maps: Volumes cut alike with nearest interpolation (labels, coordinates).
        planes: Which planes to cut.
        every: Keep every ``every``-th slice.
        min_foreground: Smallest foreground share of a kept slice.
        max_anisotropy: Planes whose pixels are more than this times longer one way than the
            other are skipped (e.g. through-plane views of a few thick slices).
        min_side: Planes whose slices are shorter than this (in pixels of the finer
            spacing) either way are skipped (strips across a stack of a few slices).
    """
    # np.take copies a non-contiguous volume whole for every slice: make each contiguous once
    image = np.ascontiguousarray(image)
    maps = {name: np.ascontiguousarray(volume) for name, volume in (maps or {}).items()}
    for plane in planes:
        axis = AXES[plane]
        row_mm, col_mm = plane_spacing(zooms, plane)
        rows, cols = volume_slice(image, plane, 0).shape
        finer = min(row_mm, col_mm)
        if (
            max(row_mm, col_mm) / finer > max_anisotropy
            or min(rows * row_mm, cols * col_mm) / finer < min_side
        ):
            continue
        first, last = nonempty_range(foreground, axis, min_foreground)
        for index in range(first, last + 1):
            if (index - first) % every:
                continue
            raw = volume_slice(image, plane, index)
            pixels = resample_square_pixels(raw, row_mm, col_mm, order=1)
            inside = resample_square_pixels(np.ones(raw.shape, np.uint8), row_mm, col_mm, order=0)
            cut = {
                name: pad_square(
                    resample_square_pixels(volume_slice(volume, plane, index), row_mm, col_mm, order=0)
                )[0]
                for name, volume in maps.items()
            }
            yield VolumeSlice(
                plane, index, first, last, pad_square(pixels)[0], cut, pad_square(inside)[0].astype(bool)
            )

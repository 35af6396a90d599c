"""Classes from counts of annotated objects in a tile.

- ``heldout_nuclei_count``: the number of nuclei in the tile (instances with at least
  ``min_pixels`` pixels in it; see ``instances``), binned as 0, 1, 2, 3 or more.
- ``heldout_vesicle_membrane``: whether a cryo-ET tile shows a vesicle membrane, from the
  membrane surface points that ship with the tomogram: ``membrane`` with at least
  ``MEMBRANE_MIN_POINTS`` points within ``MEMBRANE_HALF_DEPTH`` slices of the tile's slice and
  inside the tile, ``no_membrane`` with none; tiles with 1 or 2 points are ambiguous and left out.
"""

from __future__ import annotations

__all__ = [
    "COUNT_BINS",
    "MEMBRANE_CLASSES",
    "MEMBRANE_HALF_DEPTH",
    "MEMBRANE_MIN_POINTS",
    "count_bin",
    "membrane_class",
]

COUNT_BINS = ("0", "1", "2", "3_or_more")
MEMBRANE_CLASSES = ("no_membrane", "membrane")
MEMBRANE_MIN_POINTS = 3
MEMBRANE_HALF_DEPTH = 1.5


def count_bin(count: int) -> str:
    """The class of ``count`` objects."""
    return COUNT_BINS[min(count, len(COUNT_BINS) - 1)]


def membrane_class(points: int) -> str | None:
    """The class of a tile with ``points`` membrane points near it; ``None`` when ambiguous."""
    if points == 0:
        return MEMBRANE_CLASSES[0]
    return MEMBRANE_CLASSES[1] if points >= MEMBRANE_MIN_POINTS else None

"""Anatomical plane and slice-position bins of a volume's slices.

- Plane: the axis the slice was cut along in the volume's canonical (RAS+) orientation:
  ``sagittal`` (x), ``coronal`` (y), ``axial`` (z).
- Position: where the slice lies between the first and the last non-empty slice of the
  volume along its axis, in five equal bins from the inferior (axial) or posterior (coronal)
  end. Sagittal slices get no position: in a left-right symmetric head the two sides are
  mirror images, so the label would not be decidable from the image.
"""

from __future__ import annotations

__all__ = ["PLANES", "POSITION_BINS", "position_bin"]

PLANES = ("axial", "coronal", "sagittal")
POSITION_BINS = ("pos_00_20", "pos_20_40", "pos_40_60", "pos_60_80", "pos_80_100")


def position_bin(index: int, first: int, last: int) -> str:
    """The bin of slice ``index`` among the non-empty slices ``first..last`` (inclusive)."""
    if not first <= index <= last:
        raise ValueError(f"slice {index} outside the non-empty range {first}..{last}")
    share = (index - first) / (last - first + 1)
    return POSITION_BINS[int(share * len(POSITION_BINS))]

"""Foreground masks, boxes and counts from instance masks (0 background, one id per object).

The foreground (segmentation: background / object) is every pixel with an id above 0. A box is
the extent of an instance's pixels in the image: ``(x1, y1, x2, y2)`` with ``x2`` and ``y2`` one
past the last pixel. Fragments smaller than ``min_pixels`` (a nucleus cut by a
tile border) are neither boxed nor counted.
"""

from __future__ import annotations

import numpy as np

from medfoundry.corpus.image import BoxLabel

__all__ = ["instance_boxes", "instance_foreground"]


def instance_boxes(ids: np.ndarray, min_pixels: int, name: str) -> list[BoxLabel]:
    """One box per instance in ``ids`` ``(H, W)`` with at least ``min_pixels`` pixels."""
    boxes: list[BoxLabel] = []
    for instance in np.unique(ids[ids > 0]):
        ys, xs = np.nonzero(ids == instance)
        if ys.size >= min_pixels:
            boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, name))
    return boxes


def instance_foreground(ids: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8: 1 where ``ids`` has an instance, 0 on the background."""
    return (ids > 0).astype(np.uint8)

"""Brain tissue classes from tissue probability maps or binary tissue masks.

- From probability maps (MNI152: grey- and white-matter maps): grey matter where its
  probability is at least 0.5 and at least white matter's; white matter where its probability
  is at least 0.5 and higher than grey matter's; background otherwise (CSF, skull, outside).
- From binary masks (neuropycon-data: GM, WM, CSF masks of one subject): the mask's class;
  the masks do not overlap (checked: an overlap is an error).
"""

from __future__ import annotations

import numpy as np

from medfoundry.errors import DataError

__all__ = ["tissue_from_masks", "tissue_from_probabilities"]


def tissue_from_probabilities(grey: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 labels: 0 background, 1 grey, 2 white matter."""
    labels = np.zeros(grey.shape, np.uint8)
    labels[(grey >= 0.5) & (grey >= white)] = 1
    labels[(white >= 0.5) & (white > grey)] = 2
    return labels


def tissue_from_masks(masks: list[np.ndarray], where: str) -> np.ndarray:
    """Binary masks (class 1, 2, ... in order) -> uint8 labels, 0 where no mask is set.

    Raises:
        DataError: two masks overlap.
    """
    stacked = np.stack([m > 0 for m in masks])
    if (stacked.sum(0) > 1).any():
        raise DataError(f"{where}: tissue masks overlap in {(stacked.sum(0) > 1).sum()} voxels")
    labels = np.zeros(masks[0].shape, np.uint8)
    for index, mask in enumerate(stacked, start=1):
        labels[mask] = index
    return labels

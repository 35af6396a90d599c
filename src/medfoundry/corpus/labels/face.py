"""The face of a head MR volume, from pydeface's defacing mask.

pydeface's mask is 1 where the image is kept and 0 where defacing removes it; the face is the
head voxels (see ``head``) that the mask removes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["face_mask"]


def face_mask(kept: np.ndarray, head: np.ndarray) -> np.ndarray:
    """uint8 volume: 1 on the face (head voxels where ``kept`` < 0.5), 0 elsewhere."""
    face: np.ndarray = ((kept < 0.5) & head).astype(np.uint8)
    return face

"""Brain MR tasks of the demo database, from the MNI ICBM152 2009a template (nilearn).

- ``brain_tissue`` (segmentation: background, grey_matter, white_matter) on axial slices.
  A voxel is grey matter when its grey-matter probability is at least 0.5 and at least its
  white-matter probability, white matter when its white-matter probability is at least 0.5 and
  higher, background otherwise (CSF, skull, outside the head).
- ``brain_plane`` (classification: axial, coronal, sagittal): slices along each axis,
  labelled by the axis they were cut along.

The volume is first cropped to the brain (voxels with grey + white probability above 0.1, plus
a margin) and every slice is padded to a square, so the slice's shape gives away nothing. The
T1 intensities are scaled to 8 bits between the 0.5th and 99.5th percentile inside that box.

There is one template, so splits are by slice position, in blocks of 24 slices along the
cutting axis: 16 training slices, a 3-slice gap, 3 validation slices, a 2-slice gap. The gaps
keep neighbouring (nearly identical) slices out of different splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.demo import packaged_images as images
from medfoundry.demo.writing import save_png, to_uint8, write_csv

__all__ = ["write_brain"]

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # in RAS+ orientation


def write_brain(out_dir: Path, plane_every: int = 3, min_brain_fraction: float = 0.05) -> None:
    """``brain_tissue.csv`` and ``brain_plane.csv`` (and their PNGs) under ``out_dir``."""
    t1, grey, white = images.mni152()
    brain = (grey + white) > 0.1
    box = tuple(slice(max(lo - 4, 0), hi + 5) for lo, hi in zip(*_extent(brain), strict=True))
    t1, grey, white, brain = t1[box], grey[box], white[box], brain[box]
    t1_8 = to_uint8(t1, 0.5, 99.5)
    labels = np.zeros(t1.shape, np.uint8)
    labels[(grey >= 0.5) & (grey >= white)] = 1
    labels[(white >= 0.5) & (white > grey)] = 2

    tissue_rows, plane_rows = [], []
    for plane, axis in AXES.items():
        for index in range(t1.shape[axis]):
            split = _block_split(index)
            if split is None or np.take(brain, index, axis).mean() < min_brain_fraction:
                continue
            image = _square(_oriented(np.take(t1_8, index, axis)))
            if plane == "axial":
                name = f"brain/axial_{index:03d}.png"
                mask_name = f"brain/axial_{index:03d}_mask.png"
                save_png(image, out_dir / name)
                save_png(_square(_oriented(np.take(labels, index, axis))), out_dir / mask_name)
                tissue_rows.append({"image": name, "mask": mask_name, "split": split})
            if index % plane_every == 0:
                name = f"brain/plane_{plane}_{index:03d}.png"
                save_png(image, out_dir / name)
                plane_rows.append({"image": name, "label": plane, "split": split})
    write_csv(out_dir / "brain_tissue.csv", tissue_rows)
    write_csv(out_dir / "brain_plane.csv", plane_rows)


def _extent(mask: np.ndarray) -> tuple[list[int], list[int]]:
    where = np.nonzero(mask)
    return [int(w.min()) for w in where], [int(w.max()) for w in where]


def _block_split(index: int) -> str | None:
    position = index % 24
    if position < 16:
        return "train"
    if 19 <= position < 22:
        return "val"
    return None


def _oriented(slice_2d: np.ndarray) -> np.ndarray:
    """Rows from top (superior or anterior) to bottom, as a slice is usually shown."""
    return np.ascontiguousarray(np.rot90(slice_2d))


def _square(array: np.ndarray) -> np.ndarray:
    height, width = array.shape
    side = max(height, width)
    out = np.zeros((side, side), array.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    out[top : top + height, left : left + width] = array
    return out

"""Brain MR tasks of the demo database, from the MNI ICBM152 2009a template (nilearn), with the
corpus's rules (``corpus.labels.brain_tissue``, ``corpus.geometry``, ``volume_to_uint8``).

- ``brain_tissue`` (segmentation: background, grey_matter, white_matter) on axial slices.
  A voxel is grey matter when its grey-matter probability is at least 0.5 and at least its
  white-matter probability, white matter when its white-matter probability is at least 0.5 and
  higher, background otherwise (CSF, skull, outside the head).
- ``volume_plane`` (classification: axial, coronal, sagittal): slices along each axis,
  labelled by the axis they were cut along (``corpus.labels.slice_position``).

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

from medfoundry.corpus.files import save_png, write_csv
from medfoundry.corpus.geometry import foreground_box, pad_square
from medfoundry.corpus.labels.brain_tissue import tissue_from_probabilities
from medfoundry.corpus.sources.slicing import volume_to_uint8
from medfoundry.demo import packaged_images as images

__all__ = ["write_brain"]

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # in RAS+ orientation


def write_brain(out_dir: Path, plane_every: int = 3, min_brain_fraction: float = 0.05) -> None:
    """``brain_tissue.csv`` and ``volume_plane.csv`` (and their PNGs) under ``out_dir``."""
    t1, grey, white = images.mni152()
    brain = (grey + white) > 0.1
    box = foreground_box(brain, margin=4)
    t1, grey, white, brain = t1[box], grey[box], white[box], brain[box]
    t1_8 = volume_to_uint8(t1)
    labels = tissue_from_probabilities(grey, white)

    tissue_rows, plane_rows = [], []
    for plane, axis in AXES.items():
        for index in range(t1.shape[axis]):
            split = _block_split(index)
            if split is None or np.take(brain, index, axis).mean() < min_brain_fraction:
                continue
            image = _square(_oriented(np.take(t1_8, index, axis)))
            name = f"brain/{plane}_{index:03d}.png"
            if plane == "axial":
                mask_name = f"brain/axial_{index:03d}_mask.png"
                save_png(_square(_oriented(np.take(labels, index, axis))), out_dir / mask_name)
                tissue_rows.append({"image": name, "mask": mask_name, "split": split})
            if index % plane_every == 0:
                plane_rows.append({"image": name, "label": plane, "split": split})
            if plane == "axial" or index % plane_every == 0:
                save_png(image, out_dir / name)
    write_csv(out_dir / "brain_tissue.csv", tissue_rows)
    write_csv(out_dir / "volume_plane.csv", plane_rows)


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
    return pad_square(array)[0]

"""Label volumes written back onto an input volume's own voxel grid (the inverse of slicing).

``volumes`` reads a volume in canonical (RAS+) orientation and shows its slices the
radiological way (``volume_slice``). A slice-wise result (e.g. predicted labels) is put back
slice by slice into a canonical array (``put_slice``), which ``write_label_volume`` reorients to
the input's stored axis order and saves as NIfTI with the input's affine: same shape, voxel
sizes, orientation and position as the input, so viewers overlay it on the input directly.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medfoundry.data.volumes import AXES, Volume

__all__ = ["label_dtype", "plane_shape", "put_slice", "write_label_volume"]


def plane_shape(shape: tuple[int, ...], axis: str) -> tuple[int, int]:
    """``(rows, cols)`` of ``volume_slice`` of a canonical volume of ``shape`` along ``axis``."""
    first, second = [int(s) for i, s in enumerate(shape[:3]) if i != AXES[axis]]
    return second, first


def put_slice(labels: np.ndarray, plane: np.ndarray, axis: str, *, index: int) -> None:
    """Write a slice shown as ``volume_slice`` shows it back into a canonical volume, in place."""
    position: list[slice | int] = [slice(None)] * 3
    position[AXES[axis]] = index
    labels[tuple(position)] = np.swapaxes(np.flip(plane, axis=(0, 1)), 0, 1)


def label_dtype(num_classes: int) -> type[np.integer]:
    """The smallest unsigned type that holds the class indices."""
    return np.uint8 if num_classes <= 256 else np.uint16


def write_label_volume(path: Path, labels: np.ndarray, volume: Volume) -> Path:
    """Save canonical ``labels`` as NIfTI on the stored grid of ``volume``.

    Args:
        path: The ``.nii.gz`` (or ``.nii``) file to write.
        labels: ``(X, Y, Z)`` in canonical orientation, the shape of ``volume.data``.
        volume: The input volume (its ``affine`` is the stored grid's).

    Raises:
        ValueError: ``volume`` has no stored affine, or the shapes differ.
    """
    if volume.affine is None:
        raise ValueError("the volume carries no affine of its stored grid")
    if labels.shape != volume.data.shape[:3]:
        raise ValueError(f"labels {labels.shape} do not match the volume {volume.data.shape[:3]}")
    stored = nib.orientations.io_orientation(volume.affine)
    to_stored = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), stored)
    data = np.ascontiguousarray(nib.orientations.apply_orientation(labels, to_stored))
    image = nib.Nifti1Image(data, volume.affine)
    image.set_data_dtype(data.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path

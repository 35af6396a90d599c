"""Undoing the fit and the slicing: a prediction goes back exactly where its pixels came from."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medfoundry.data.fit_inverse import restore_boxes, restore_logits
from medfoundry.data.label_volumes import plane_shape, put_slice, write_label_volume
from medfoundry.data.preprocessing import fit_to_size
from medfoundry.data.volumes import AXES, load_volume, volume_slice


def _regions(height: int, width: int) -> np.ndarray:
    """A mask of three blocky classes (synthetic: only the geometry is tested)."""
    mask = np.zeros((height, width), np.int64)
    mask[height // 4 : height // 2, width // 5 : width // 2] = 1
    mask[2 * height // 3 :, 3 * width // 5 :] = 2
    return mask


def _one_hot_logits(mask: np.ndarray, classes: int = 3) -> torch.Tensor:
    logits = torch.full((classes, *mask.shape), -5.0)
    for c in range(classes):
        logits[c][torch.from_numpy(mask == c)] = 5.0
    return logits


@pytest.mark.parametrize("fit", ["stretch", "letterbox", "center"])
@pytest.mark.parametrize("shape", [(30, 50), (70, 44)])
def test_restored_masks_match_the_original(fit: str, shape: tuple[int, int]) -> None:
    mask = _regions(*shape)
    image = mask[..., None].astype(np.float32)
    _, fitted, geometry = fit_to_size(image, mask, 48, fit=fit, ignore_index=255)
    assert fitted is not None
    logits, seen = restore_logits(
        _one_hot_logits(np.where(fitted == 255, 0, fitted)), geometry, shape, output_hw=shape
    )
    restored = logits.argmax(dim=0).numpy()
    assert logits.shape == (3, *shape)
    if fit == "center":  # no resampling: exact where the model saw the image, unseen where cropped
        assert np.array_equal(restored[seen.numpy()], mask[seen.numpy()])
        assert seen.all() == (max(shape) <= 48)
        assert seen.sum() == min(shape[0], 48) * min(shape[1], 48)
    else:  # resampled twice: only pixels at region borders may change
        assert (restored == mask).mean() > 0.95 and seen.all()


def test_restoring_onto_another_grid_resizes() -> None:
    mask = _regions(40, 40)
    _, fitted, geometry = fit_to_size(
        mask[..., None].astype(np.float32), mask, 40, fit="center", ignore_index=255
    )
    assert fitted is not None
    logits, seen = restore_logits(_one_hot_logits(fitted), geometry, (40, 40), output_hw=(20, 80))
    assert logits.shape == (3, 20, 80) and seen.all()
    assert (logits.argmax(dim=0).numpy() == mask[::2].repeat(2, axis=1)).mean() > 0.95


@pytest.mark.parametrize("fit", ["stretch", "letterbox", "center"])
def test_boxes_go_back_to_image_pixels(fit: str) -> None:
    shape = (30, 50)
    boxes = np.array([[3.0, 4.0, 20.0, 25.0], [30.0, 1.0, 49.0, 12.5]])
    _, _, (sx, sy, ox, oy) = fit_to_size(
        np.zeros((*shape, 1), np.float32), None, 48, fit=fit, ignore_index=255
    )
    fitted = boxes * [sx, sy, sx, sy] + [ox, oy, ox, oy]
    np.testing.assert_allclose(
        restore_boxes(fitted, (sx, sy, ox, oy), shape, output_hw=shape), boxes, atol=1e-9
    )
    # onto a grid twice as fine (a slice before in-plane resampling to coarser pixels)
    doubled = restore_boxes(fitted, (sx, sy, ox, oy), shape, output_hw=(60, 100))
    np.testing.assert_allclose(doubled, boxes * 2, atol=1e-9)


@pytest.mark.parametrize("axis", list(AXES))
def test_put_slice_inverts_volume_slice(axis: str) -> None:
    volume = np.random.default_rng(0).integers(0, 9, (5, 6, 7))
    rebuilt = np.zeros_like(volume)
    for index in range(volume.shape[AXES[axis]]):
        plane = volume_slice(volume, axis, index)
        assert plane.shape == plane_shape(volume.shape, axis)
        put_slice(rebuilt, plane, axis, index=index)
    assert np.array_equal(rebuilt, volume)


def test_label_volume_is_written_on_the_stored_grid(tmp_path: Path) -> None:
    stored = np.random.default_rng(1).integers(0, 3, (5, 6, 7)).astype(np.uint8)
    affine = np.array([[0.0, 0.0, -2.0, 10.0], [1.5, 0.0, 0.0, -3.0], [0.0, -3.0, 0.0, 4.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(stored, affine), tmp_path / "in.nii.gz")
    volume = load_volume(tmp_path / "in.nii.gz", None)  # canonical: axes permuted and flipped
    assert volume.data.shape != stored.shape
    write_label_volume(tmp_path / "out.nii.gz", np.asarray(volume.data), volume)
    written = nib.load(tmp_path / "out.nii.gz")
    assert np.array_equal(np.asanyarray(written.dataobj), stored)
    np.testing.assert_allclose(written.affine, affine)

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from medfoundry.data import decode_image, read_image, read_mask
from medfoundry.data.intensity import PercentileIntensity, RangeIntensity
from medfoundry.errors import DataError


def test_8_and_16_bit_gray_scale_to_unit_range_and_three_channels(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "b.png")
    for name in ("a.png", "b.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (1, 2, 3) and image.dtype == np.float32
        np.testing.assert_allclose(image[0, :, 0], [0.0, 1.0])


def test_rgba_drops_alpha_palette_becomes_rgb_and_tiff_is_read(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png")[0, 0], [1.0, 0.0, 0.0])
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert decode_image(tmp_path / "p.png", intensity=RangeIntensity(), frame=None).shape == (2, 2, 3)
    tifffile.imwrite(tmp_path / "b.tif", np.full((3, 4), 0.5, np.float32))
    assert read_image(tmp_path / "b.tif").shape == (3, 4, 3)


def test_16_bit_microscopy_with_percentile_scaling(stardist_images: Path) -> None:
    path = stardist_images / "img2d.tif"  # uint16 fluorescence that fills a small part of the range
    full_range = decode_image(path, intensity=RangeIntensity(), frame=None)
    stretched = decode_image(path, intensity=PercentileIntensity(low=1, high=99), frame=None)
    assert full_range.shape == stretched.shape == (512, 512, 1)
    assert full_range.max() < 0.5 and np.isclose(np.percentile(stretched, 99), 1.0, atol=0.02)


def test_jpeg_colour_image_from_scikit_image(skimage_data: Path) -> None:
    image = read_image(skimage_data / "retina.jpg")
    assert image.shape == (1411, 1411, 3) and 0.0 <= image.min() and image.max() <= 1.0


def test_corrupt_inputs_give_one_clear_error(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    (tmp_path / "empty.png").write_bytes(b"")
    tifffile.imwrite(tmp_path / "nan.tif", np.full((2, 2), np.nan, np.float32))
    tifffile.imwrite(tmp_path / "big.tif", np.full((2, 2), 7.0, np.float32))
    with pytest.raises(DataError, match=r"truncated.png: cannot decode image"):
        read_image(tmp_path / "truncated.png")
    with pytest.raises(DataError, match=r"empty.png: file is empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(DataError, match=r"nan.tif: image holds NaN"):
        read_image(tmp_path / "nan.tif")
    with pytest.raises(DataError, match=r"big.tif: float image values span \[7, 7\], outside \[0, 1\]"):
        read_image(tmp_path / "big.tif")
    with pytest.raises(DataError, match=r"missing.png: file not found"):
        read_image(tmp_path / "missing.png")


def test_masks_from_png_tiff_and_nifti(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 2]], np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 2]]
    nib.save(
        nib.Nifti1Image(np.array([[0, 1], [2, 0]], np.uint8)[..., None], np.eye(4)), tmp_path / "m.nii.gz"
    )
    assert read_mask(tmp_path / "m.nii.gz").tolist() == [[0, 1], [2, 0]]
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.5, 1.0]], np.float32))
    with pytest.raises(DataError, match="non-integer"):
        read_mask(tmp_path / "f.tif")

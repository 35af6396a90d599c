from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medfoundry.data import read_image, read_mask
from medfoundry.errors import DataError


def test_8_and_16_bit_gray_scale_to_unit_range_and_three_channels(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "b.png")
    for name in ("a.png", "b.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (1, 2, 3) and image.dtype == np.float32
        np.testing.assert_allclose(image[0, :, 0], [0.0, 1.0])


def test_rgba_drops_alpha_and_tiff_is_read(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png")[0, 0], [1.0, 0.0, 0.0])
    tifffile.imwrite(tmp_path / "b.tif", np.full((3, 4), 0.5, np.float32))
    assert read_image(tmp_path / "b.tif").shape == (3, 4, 3)


def test_corrupt_inputs_give_one_clear_error(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    (tmp_path / "empty.png").write_bytes(b"")
    tifffile.imwrite(tmp_path / "nan.tif", np.full((2, 2), np.nan, np.float32))
    with pytest.raises(DataError, match=r"truncated.png: cannot decode image"):
        read_image(tmp_path / "truncated.png")
    with pytest.raises(DataError, match=r"empty.png: file is empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(DataError, match=r"nan.tif: image holds NaN"):
        read_image(tmp_path / "nan.tif")


def test_mask_must_be_integer_and_2d(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 2]], np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 2]]
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.5, 1.0]], np.float32))
    with pytest.raises(DataError, match="non-integer"):
        read_mask(tmp_path / "f.tif")

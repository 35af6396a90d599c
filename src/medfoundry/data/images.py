"""Decoding image and mask files into arrays.

Images become ``(H, W, 3)`` float32 in [0, 1]: 8-bit values / 255, 16-bit / 65535, floats
clipped; grayscale is replicated to 3 channels and alpha is dropped. Masks become ``(H, W)``
int64 class indices. Every failure is a ``DataError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from medfoundry.errors import DataError

__all__ = ["image_size", "read_image", "read_mask", "to_unit_rgb"]

TIFF_SUFFIXES = {".tif", ".tiff"}


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` float32 in [0, 1].

    Raises:
        DataError: the file is missing, empty, truncated, not an image, or holds NaN.
    """
    return to_unit_rgb(_read_array(path), path)


def read_mask(path: Path) -> np.ndarray:
    """Read an integer mask file as ``(H, W)`` int64.

    Raises:
        DataError: the file cannot be decoded, is not 2D, or holds non-integer values.
    """
    array = _read_array(path)
    if array.ndim == 3 and array.shape[-1] in (3, 4) and np.all(array[..., :3] == array[..., :1]):
        array = array[..., 0]  # a gray mask saved as RGB(A)
    if array.ndim != 2:
        raise DataError(f"{path}: a mask must be a single-channel 2D image, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{path}: mask holds non-integer values; masks are class indices")
    elif array.dtype.kind not in "iub":
        raise DataError(f"{path}: unsupported mask dtype {array.dtype}")
    return array.astype(np.int64)


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels.

    Raises:
        DataError: the file cannot be opened as an image.
    """
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
                return (
                    (shape[0], shape[1])
                    if len(shape) == 2 or shape[-1] in (1, 2, 3, 4)
                    else (shape[1], shape[2])
                )
        with Image.open(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError, ValueError, IndexError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {str(e)[:120]})") from None


def to_unit_rgb(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Scale a decoded array to float32 [0, 1] with 3 channels (see module docstring)."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first TIFF
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise DataError(f"{path}: expected a 2D gray or RGB(A) image, got shape {array.shape}")
    if array.shape[-1] in (2, 4):  # gray+alpha or RGBA: drop alpha
        array = array[..., :-1]
    if array.dtype.kind == "b":
        out = array.astype(np.float32)
    elif array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        out = ((array.astype(np.float32) - max(info.min, 0)) / (info.max - max(info.min, 0))).astype(
            np.float32
        )
    elif array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise DataError(f"{path}: image holds NaN or infinite values")
        out = array.astype(np.float32)
    else:
        raise DataError(f"{path}: unsupported image dtype {array.dtype}")
    out = np.clip(out, 0.0, 1.0)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return np.asarray(tifffile.imread(path))
        with Image.open(path) as file:
            file.load()
            image: Image.Image = file
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {str(e)[:120]})") from None

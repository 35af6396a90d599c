"""Decoding 2D files (PNG, JPEG, TIFF, BMP, DICOM) and mask files (PNG, TIFF, NIfTI) into arrays.

Images become ``(H, W, C)`` float32 in [0, 1] with ``C`` 1 (gray) or 3 (colour), by the task's
intensity setting (``medfoundry.data.intensity``): by default 8-bit values / 255 and 16-bit
/ 65535 (use ``percentile`` for 16-bit microscopy that fills only part of the range); alpha is
dropped; palette and CMYK images become RGB. DICOM files are recognised by their ``.dcm``
suffix or their ``DICM`` preamble. Masks become ``(H, W)`` int64; a palette (indexed) PNG mask
is read as its indices, the usual format of segmentation datasets; a 2D NIfTI mask is read as
stored (array axis 0 = image rows). Every failure is a ``DataError`` naming the file.

What decoding changes on the way (alpha dropped, palette or CMYK converted, an RGB mask reduced
to one channel) is appended to ``notes``, one line per file, for ``validate-data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from medfoundry.data import dicom
from medfoundry.data.intensity import RangeIntensity, scale_to_unit
from medfoundry.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "check_file", "decode_image", "is_dicom", "read_image", "read_mask"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` float32 in [0, 1], with default scaling.

    Raises:
        DataError: the file is missing, empty, truncated, not an image, or holds NaN.
    """
    image = decode_image(path, intensity=RangeIntensity(), frame=None)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def decode_image(
    path: Path, *, intensity: Any, frame: int | None, notes: list[str] | None = None
) -> np.ndarray:
    """Decode a 2D image file (or one frame of a multi-frame DICOM).

    Args:
        path: The file.
        intensity: The task's intensity setting (``auto`` resolves by format).
        frame: Frame of a multi-frame DICOM; ``None`` for single images.
        notes: Receives one line per change made while decoding (e.g. alpha dropped).

    Returns:
        ``(H, W, C)`` float32 in [0, 1], ``C`` 1 or 3.
    """
    check_file(path)
    if is_dicom(path):
        return dicom.read_dicom_image(path, frame, intensity)
    notes = notes if notes is not None else []
    array = _read_array(path, notes)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first TIFF
        notes.append(f"{path}: channels-first TIFF {array.shape[-1]}xHxW read as HxWx{array.shape[-1]}")
    if array.ndim == 3 and array.shape[-1] in (2, 4):  # gray+alpha or RGBA: drop alpha
        array = array[..., :-1]
        notes.append(f"{path}: alpha channel dropped")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3)):
        raise DataError(f"{path}: expected a 2D gray or RGB(A) image, got shape {array.shape}")
    mode = RangeIntensity() if intensity.type == "auto" else intensity
    return scale_to_unit(array, mode, where=str(path))


def read_mask(path: Path, notes: list[str] | None = None) -> np.ndarray:
    """Read an integer mask file as ``(H, W)`` int64 (a palette PNG as its indices).

    Args:
        path: The mask file.
        notes: Receives one line per change made while decoding.

    Raises:
        DataError: the file cannot be decoded, is not 2D, or holds non-integer values.
    """
    check_file(path)
    notes = notes if notes is not None else []
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        try:
            nifti: Any = nib.load(path)
            array = np.asanyarray(nifti.dataobj)
        except Exception as e:  # nibabel raises many types for corrupt files
            raise DataError(f"{path}: cannot read NIfTI mask ({type(e).__name__}: {str(e)[:120]})") from None
        array = (
            array.reshape(array.shape[:2])
            if array.ndim > 2 and array.size == np.prod(array.shape[:2])
            else array
        )
    else:
        array = _read_array(path, notes, palette_indices=True)
    if array.ndim == 3 and array.shape[-1] in (3, 4) and np.all(array[..., :3] == array[..., :1]):
        array = array[..., 0]  # a gray mask saved as RGB(A)
        notes.append(f"{path}: gray mask stored as RGB, first channel used")
    if array.ndim != 2:
        raise DataError(f"{path}: a mask must be a single-channel 2D image, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{path}: mask holds non-integer values; masks are class indices")
    elif array.dtype.kind not in "iub":
        raise DataError(f"{path}: unsupported mask dtype {array.dtype}")
    mask: np.ndarray = array.astype(np.int64)
    return mask


def check_file(path: Path) -> None:
    """Raise ``DataError`` for a missing or empty (0-byte) file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")


def is_dicom(path: Path) -> bool:
    """A ``.dcm`` suffix, or the ``DICM`` marker after the 128-byte preamble."""
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES or path.name.lower().endswith(NIFTI_SUFFIXES):
        return False
    with path.open("rb") as f:
        return f.read(132)[128:] == b"DICM"


def _read_array(path: Path, notes: list[str], palette_indices: bool = False) -> np.ndarray:
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return np.asarray(tifffile.imread(path))
        with Image.open(path) as opened:
            image: Image.Image = opened
            image.load()
            if image.mode == "P" and palette_indices:
                return np.asarray(image)  # a label map: the indices are the classes
            if image.mode in ("P", "PA"):
                image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
                notes.append(f"{path}: palette image converted to RGB")
            elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                notes.append(f"{path}: {image.mode} image converted to RGB")
                image = image.convert("RGB")
            elif image.mode == "I" and path.suffix.lower() == ".png":
                return np.asarray(image).astype(np.uint16)  # 16-bit PNG that Pillow widened to int32
            return np.asarray(image)
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: image too large to decode safely ({e})") from None
    except MemoryError:
        raise DataError(f"{path}: image too large to decode (out of memory)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {str(e)[:120]})") from None

"""A task's preprocessing: the settings that turn a decoded sample into a cached square array.

Decoding gives ``(H, W, C)`` float32 in [0, 1] (see ``intensity``). ``fit_to_size`` then brings
it to ``size x size``:

- ``stretch``: resize to ``size x size`` (aspect ratio not kept);
- ``letterbox``: keep the aspect ratio, longer side to ``size``, pad the rest with 0;
- ``center``: no scaling: center-crop or zero-pad (with ``spacing_mm`` on volumes, one pixel is
  then a fixed physical size and the field of view is ``size x spacing_mm``).

Masks are resized with nearest-neighbour and padded with the task's ignore index; boxes follow
through the returned ``(scale_x, scale_y, offset_x, offset_y)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medfoundry.data.intensity import AutoIntensity, Intensity

__all__ = ["Preprocessing", "fit_to_size", "to_channels"]

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as PIL's convert("L")


class Preprocessing(BaseModel):
    """How a task's images are decoded and cached.

    Args:
        size: Side of the cached square images in pixels; ``None``: the model's ``image_size``.
        fit: ``stretch``, ``letterbox`` or ``center`` (see module docstring).
        channels: ``auto`` keeps colour and replicates gray to 3 channels; ``gray`` turns colour
            into luminance first (for tasks where colour is an artefact of the scanner).
        intensity: Mapping of stored values to [0, 1] (see ``medfoundry.data.intensity``).
        store: Cache dtype: ``uint8`` (256 levels, a quarter of the memory) or ``float16``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int | None = Field(default=None, ge=8)
    fit: Literal["stretch", "letterbox", "center"] = "stretch"
    channels: Literal["auto", "gray"] = "auto"
    intensity: Intensity = Field(default_factory=AutoIntensity)
    store: Literal["uint8", "float16"] = "uint8"


def to_channels(image: np.ndarray, channels: str) -> np.ndarray:
    """``(H, W, C)`` -> ``(H, W, 1)`` for gray content, ``(H, W, 3)`` for colour (kept 1-channel
    in the cache and replicated when read, which saves two thirds of the memory)."""
    if image.shape[-1] == 3 and channels == "gray":
        return (image @ LUMA)[..., None]
    return image


def fit_to_size(
    image: np.ndarray, mask: np.ndarray | None, size: int, *, fit: str, ignore_index: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float, float]]:
    """Bring a sample to ``size x size``.

    Args:
        image: ``(H, W, C)`` float32 in [0, 1].
        mask: ``(H, W)`` int64 or ``None``.
        size: Output side.
        fit: ``stretch``, ``letterbox`` or ``center``.
        ignore_index: Mask value of padded pixels.

    Returns:
        Image ``(size, size, C)`` float32, mask ``(size, size)`` int64 or ``None``, and
        ``(scale_x, scale_y, offset_x, offset_y)`` mapping original pixel coordinates to output.
    """
    height, width = image.shape[:2]
    if fit == "stretch":
        new_h, new_w = size, size
    elif fit == "letterbox":
        scale = size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    else:
        new_h, new_w = height, width
    sx, sy = new_w / width, new_h / height
    if (new_h, new_w) != (height, width):
        image = _resize(image, new_h, new_w)
        mask = _resize_mask(mask, new_h, new_w) if mask is not None else None
    top, left = (size - new_h) // 2, (size - new_w) // 2  # negative: crop
    image = _place(image, size, top, left, 0)
    mask = _place(mask, size, top, left, ignore_index) if mask is not None else None
    return image, mask, (sx, sy, float(left), float(top))


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    # Pillow's bilinear filter widens with the scale when shrinking: the same antialiased result
    # as torch's interpolate(antialias=True) (to 1e-6), single-threaded, so it never competes
    # with the training process for cores
    channels = [Image.fromarray(np.ascontiguousarray(image[..., c])) for c in range(image.shape[-1])]
    resized = [np.asarray(c.resize((width, height), Image.Resampling.BILINEAR)) for c in channels]
    out: np.ndarray = np.clip(np.stack(resized, axis=-1), 0, 1)
    return out


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    resized = Image.fromarray(mask.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(np.int64)


def _place(array: np.ndarray, size: int, top: int, left: int, fill: float) -> np.ndarray:
    """Put ``array`` at ``(top, left)`` of a ``size x size`` canvas filled with ``fill`` (cropping
    where it sticks out)."""
    out = np.full((size, size, *array.shape[2:]), fill, dtype=array.dtype)
    src_y, src_x = max(0, -top), max(0, -left)
    dst_y, dst_x = max(0, top), max(0, left)
    h = min(array.shape[0] - src_y, size - dst_y)
    w = min(array.shape[1] - src_x, size - dst_x)
    out[dst_y : dst_y + h, dst_x : dst_x + w] = array[src_y : src_y + h, src_x : src_x + w]
    return out

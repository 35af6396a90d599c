"""Intensity handling: mapping stored values (8/16-bit, HU, scanner units) to [0, 1].

A task's ``preprocessing.intensity`` is one of:

- ``auto``: what suits the format: the dtype range for image files and MedMNIST, the DICOM
  header's VOI LUT or window for 2D DICOM, percentiles for volumes (NIfTI, NRRD, DICOM series);
- ``range``: integer values divided by their dtype's range (8-bit / 255, 16-bit / 65535, or
  ``2^BitsStored - 1`` for DICOM); float images must already lie in [0, 1];
- ``minmax``: per image (per volume for volumes) minimum to maximum;
- ``percentile``: per image / volume percentiles ``low`` to ``high`` (MR, microscopy with a
  few hot pixels, 16-bit images that use only part of their range);
- ``window``: CT windows in Hounsfield units, named (``lung``, ``soft_tissue``, ``bone``,
  ``brain``) or explicit ``{level_hu, width_hu}``; one window is replicated to three
  channels, three windows become the three channels;
- ``voi``: the DICOM header's VOI LUT or window (DICOM only).

Window presets follow common radiology practice (e.g. Radiopaedia, "Windowing (CT)").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from medfoundry.errors import DataError

__all__ = [
    "WINDOW_PRESETS_HU",
    "Intensity",
    "PercentileIntensity",
    "Window",
    "WindowIntensity",
    "apply_windows",
    "check_values",
    "intensity_bounds",
    "linear_to_unit",
    "scale_to_unit",
]

WINDOW_PRESETS_HU: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
"""Named CT windows: ``(level_hu, width_hu)``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Frozen):
    """A CT window: HU ``level - width/2`` maps to 0, ``level + width/2`` to 1."""

    level_hu: float
    width_hu: float = Field(gt=0)


class AutoIntensity(_Frozen):
    type: Literal["auto"] = "auto"


class RangeIntensity(_Frozen):
    type: Literal["range"] = "range"


class MinMaxIntensity(_Frozen):
    type: Literal["minmax"] = "minmax"


class PercentileIntensity(_Frozen):
    """Percentiles ``low`` and ``high`` of the image (or volume) map to 0 and 1."""

    type: Literal["percentile"] = "percentile"
    low: float = Field(default=0.5, ge=0, lt=100)
    high: float = Field(default=99.5, gt=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> PercentileIntensity:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class WindowIntensity(_Frozen):
    """CT windows in HU: one (replicated to 3 channels) or three (one per channel)."""

    type: Literal["window"] = "window"
    windows: list[Literal["lung", "soft_tissue", "bone", "brain"] | Window] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_or_three(self) -> WindowIntensity:
        if len(self.windows) not in (1, 3):
            raise ValueError(
                f"give 1 window (replicated to 3 channels) or 3 (one per channel), got {len(self.windows)}"
            )
        return self

    def levels_widths(self) -> list[tuple[float, float]]:
        return [
            WINDOW_PRESETS_HU[w] if isinstance(w, str) else (w.level_hu, w.width_hu) for w in self.windows
        ]


class VoiIntensity(_Frozen):
    type: Literal["voi"] = "voi"


def _shorthand(value: Any) -> Any:
    """``intensity: percentile`` is short for ``intensity: {type: percentile}``."""
    return {"type": value} if isinstance(value, str) else value


Intensity = Annotated[
    AutoIntensity | RangeIntensity | MinMaxIntensity | PercentileIntensity | WindowIntensity | VoiIntensity,
    Field(discriminator="type"),
    BeforeValidator(_shorthand),
]
"""How stored values become [0, 1] (see the module docstring)."""


def scale_to_unit(
    values: np.ndarray, intensity: Any, *, where: str, bounds: tuple[float, float] | None = None
) -> np.ndarray:
    """Map ``values`` to float32 in [0, 1] by ``range``, ``minmax`` or ``percentile``.

    Args:
        values: ``(H, W)`` or ``(H, W, C)`` array, any numeric dtype.
        intensity: A ``RangeIntensity``, ``MinMaxIntensity`` or ``PercentileIntensity``.
        where: The file (and frame), for messages.
        bounds: Precomputed ``intensity_bounds`` (e.g. of the whole volume a slice is in);
            default: those of ``values``.

    Returns:
        ``(H, W, C)`` float32 in [0, 1] (``C = 1`` for 2D input).

    Raises:
        DataError: NaN, infinite or float32-overflowing values, float values outside [0, 1] for
            ``range``, or an intensity mode this input cannot use.
    """
    array = values[..., None] if values.ndim == 2 else values
    check_values(values, where)
    if intensity.type == "range":
        return _dtype_range(array, where)
    if intensity.type in ("minmax", "percentile"):
        return linear_to_unit(array, *(bounds or intensity_bounds(array, intensity)))
    raise DataError(
        f"{where}: intensity '{intensity.type}' needs DICOM (voi) or CT in HU (window: DICOM CT, "
        "NIfTI or NRRD); use range, minmax or percentile for this file"
    )


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_values(values: np.ndarray, where: str) -> None:
    """Raise for values that intensity scaling cannot handle: NaN, infinity, or magnitudes beyond
    float32 (scaling computes in float32, where they would become infinite, then NaN).

    Raises:
        DataError: naming ``where``, the value and its index in ``values``.
    """
    if values.dtype.kind not in "fc":
        return
    finite = np.isfinite(values)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise DataError(f"{where}: image holds NaN or infinite values ({values[index]} at index {index})")
    magnitude = np.abs(values)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(magnitude)), values.shape))
    if float(magnitude[index]) > FLOAT32_MAX:
        raise DataError(
            f"{where}: value {float(values[index]):.4g} at index {index} lies beyond the float32 range "
            f"(+-{FLOAT32_MAX:.3g}); scaling would turn it into infinity and the image into NaN"
        )


def intensity_bounds(reference: np.ndarray, intensity: Any) -> tuple[float, float]:
    """The values that ``minmax`` / ``percentile`` map to 0 and 1."""
    if intensity.type == "minmax":
        return float(reference.min()), float(reference.max())
    low, high = np.percentile(reference, [intensity.low, intensity.high])
    return float(low), float(high)


def apply_windows(hu: np.ndarray, intensity: WindowIntensity) -> np.ndarray:
    """CT windows as channels: ``(H, W)`` HU -> ``(H, W, 3)`` float32 in [0, 1]."""
    channels = [
        linear_to_unit(hu, level - width / 2, level + width / 2) for level, width in intensity.levels_widths()
    ]
    stacked = np.concatenate(channels, axis=-1) if len(channels) == 3 else channels[0]
    return stacked if stacked.shape[-1] == 3 else np.repeat(stacked, 3, axis=-1)


def linear_to_unit(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low`` -> 0, ``high`` -> 1, clipped: ``(H, W[, C])`` -> ``(H, W, C)`` float32."""
    scaled = (array.astype(np.float32) - low) / max(high - low, 1e-12)
    out: np.ndarray = np.clip(scaled, 0.0, 1.0)
    return out[..., None] if out.ndim == 2 else out


def _dtype_range(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind == "b":
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        zero = max(info.min, 0)  # signed images: negatives clip to 0
        return linear_to_unit(array, zero, info.max)
    if array.dtype.kind == "f":
        low, high = float(array.min()), float(array.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise DataError(
                f"{where}: float image values span [{low:.4g}, {high:.4g}], outside [0, 1]; set "
                "preprocessing.intensity to minmax or percentile"
            )
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    raise DataError(f"{where}: unsupported image dtype {array.dtype}")

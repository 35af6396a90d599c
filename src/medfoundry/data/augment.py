"""Joint augmentation of an image with its mask or boxes (torchvision ``transforms.v2``).

Geometric transforms move image, mask and boxes together: v2 dispatches on the tv_tensor type
(masks use nearest-neighbour; boxes are transformed as boxes, then clamped to the image, and
boxes that shrink below a pixel are dropped with their labels). Intensity jitter touches only
the image. Validation and test data are never augmented.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torchvision.transforms import v2

from medfoundry.data.record import TargetKind

__all__ = ["AugmentConfig", "build_transform"]


class AugmentConfig(BaseModel):
    """Training augmentation. ``augment: true`` in a config means these defaults, ``false`` none.

    Args:
        enable_flips: Random horizontal and vertical flips (each with probability 0.5).
        enable_rotate90: Random rotation by 0, 90, 180 or 270 degrees.
        affine_degrees: Random rotation up to this many degrees (0: off).
        affine_translate: Random shift up to this fraction of the side (0: off).
        affine_scale: Random zoom in ``[1 - s, 1 + s]`` (0: off).
        crop_min_scale: Random resized crop keeping ``[crop_min_scale, 1]`` of the area
            (1: off); boxes cut by the crop are clipped, those left outside are dropped.
        intensity_jitter: Random brightness and contrast factor in ``[1 - j, 1 + j]`` (0: off).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enable_flips: bool = True
    enable_rotate90: bool = False
    affine_degrees: float = Field(default=0.0, ge=0, le=180)
    affine_translate: float = Field(default=0.0, ge=0, le=0.5)
    affine_scale: float = Field(default=0.0, ge=0, lt=1)
    crop_min_scale: float = Field(default=1.0, gt=0, le=1)
    intensity_jitter: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return {"enable_flips": False}
        return value

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation (validation, test)."""
        return cls(enable_flips=False)


def build_transform(augment: AugmentConfig, target: TargetKind, in_size: int, *, out_size: int) -> v2.Compose:
    """The transform from a ``in_size`` square sample to an ``out_size`` square training sample.

    Input and output: a ``tv_tensors.Image`` ``(C, S, S)`` (uint8 or float) and its target (a
    ``tv_tensors.Mask``, a dict with ``tv_tensors.BoundingBoxes`` and ``labels``, or anything
    else, which passes through).
    """
    steps: list[Any] = []
    if augment.crop_min_scale < 1:
        steps.append(v2.RandomResizedCrop(out_size, scale=(augment.crop_min_scale, 1.0), antialias=True))
    elif in_size != out_size:
        steps.append(v2.Resize((out_size, out_size), antialias=True))
    if augment.enable_flips:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if augment.enable_rotate90:
        steps.append(v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)]))
    if augment.affine_degrees or augment.affine_translate or augment.affine_scale:
        steps.append(
            v2.RandomAffine(
                degrees=augment.affine_degrees,
                translate=(augment.affine_translate,) * 2 if augment.affine_translate else None,
                scale=(1 - augment.affine_scale, 1 + augment.affine_scale) if augment.affine_scale else None,
            )
        )
    if augment.intensity_jitter:
        steps.append(v2.ColorJitter(brightness=augment.intensity_jitter, contrast=augment.intensity_jitter))
    if target == "boxes":
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(steps or [v2.Identity()])

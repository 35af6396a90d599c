"""Decoding, checking and fitting one sample for the cache, with notes on what changed."""

from __future__ import annotations

from typing import Any

import numpy as np

from medfoundry.data.checks import sample_problems
from medfoundry.data.preprocessing import Preprocessing, fit_to_size, to_channels
from medfoundry.data.readers import decode_record
from medfoundry.data.record import Record, TargetKind
from medfoundry.errors import DataError

__all__ = ["SampleFit"]


class SampleFit:
    """Decode, check and fit one record (picklable, for decoding in worker processes).

    Returns (when called) the stored image, the mask, the decoded size, the geometry of the fit
    and notes; or the problem lines of a sample that cannot be used.
    """

    def __init__(
        self,
        target: TargetKind,
        size: int,
        preprocessing: Preprocessing,
        *,
        num_classes: int,
        ignore_index: int,
    ) -> None:
        self.target, self.size, self.preprocessing = target, size, preprocessing
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def __call__(self, record: Record) -> Any:
        try:
            pixels = decode_record(record)
        except DataError as e:
            return e.problems
        problems = sample_problems(
            record, pixels, self.target, num_classes=self.num_classes, ignore_index=self.ignore_index
        )
        if problems:
            return problems
        image = to_channels(pixels.image, self.preprocessing.channels)
        mask = pixels.mask if self.target == "mask" else None
        image, mask, geometry = fit_to_size(
            image, mask, self.size, fit=self.preprocessing.fit, ignore_index=self.ignore_index
        )
        if not np.all(np.isfinite(image)):  # a last guard: every reader checks its own values
            return [f"{record.where}: decoding gave non-finite pixel values"]
        notes = list(pixels.notes) + _blank_note(record, pixels.image)
        if self.preprocessing.store == "uint8":
            stored = np.round(image * 255).astype(np.uint8)
        else:
            stored = image.astype(np.float16)
        return stored, mask, pixels.image.shape[:2], geometry, notes


def _blank_note(record: Record, image: np.ndarray) -> list[str]:
    """A note when nearly every pixel stores as one gray level although the values vary: a few
    extreme values (an outlier under ``minmax``, say) then set the scale and the sample is blank."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 2**18)))  # a quarter megapixel suffices
    levels = np.round(image[::step, ::step] * 255)
    low, high = np.percentile(levels, [0.5, 99.5])
    if low != high or image.max() == image.min():
        return []
    share = float(np.mean(levels == low))
    return [
        f"{record.where}: stored nearly blank ({share:.1%} of pixels at {int(low)} of 255) although its "
        "values vary: a few extreme values set the scale; check preprocessing.intensity (e.g. percentile)"
    ]

"""A torch Dataset over one task's records: decode, resize, augment jointly with the target."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from medfoundry.data.images import read_image, read_mask
from medfoundry.data.record import Record, TargetKind
from medfoundry.errors import DataError

__all__ = ["Sample", "TaskDataset"]

Sample = tuple[torch.Tensor, Any]
"""An image ``(3, S, S)`` float32 in [0, 1] and its target: a class index (int), per-class
1/0/NaN ``(C,)`` float32, a mask ``(S, S)`` int64, or ``{"boxes": (N, 4) xyxy float32 pixels,
"labels": (N,) int64}``, or ``None`` for image-only (unlabelled) tasks."""


class TaskDataset(Dataset[Sample]):
    """Samples of one task at ``image_size x image_size``.

    Indexing takes ``(index, seed)``: the seed drives that sample's augmentation, so the same
    sample position in a resumed run gets the same augmentation as in the uninterrupted run,
    whichever worker process decodes it. A plain ``index`` means seed 0.

    Args:
        records: The task's records (one split).
        target: What to read as the target.
        image_size: Output side in pixels (images are resized, not cropped).
        augment: Random flips (horizontal and vertical), applied to image and target together.
    """

    def __init__(self, records: Sequence[Record], target: TargetKind, image_size: int, augment: bool) -> None:
        self.records = list(records)
        self.target = target
        steps: list[Any] = [v2.Resize((image_size, image_size), antialias=True)]
        if augment:
            steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
        if target == "boxes":
            steps.append(v2.ClampBoundingBoxes())
            steps.append(v2.SanitizeBoundingBoxes(min_size=1.0))
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        record = self.records[index]
        image = tv_tensors.Image(torch.from_numpy(read_image(record.image)).permute(2, 0, 1))
        target = self._target(record, image.shape[-2:])
        # augmentation draws from torch's global RNG; fork it so the caller's stream is untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor).contiguous(), _plain(target)

    def _target(self, record: Record, size: torch.Size) -> Any:
        if self.target == "image":
            return None
        if self.target == "label":
            return record.label
        if self.target == "multilabel":
            return torch.tensor(record.labels, dtype=torch.float32)
        if self.target == "mask":
            assert record.mask is not None
            mask = read_mask(record.mask)
            if mask.shape != tuple(size):
                shape = tuple(size)
                raise DataError(
                    f"{record.mask}: mask size {mask.shape} differs from image {record.image} {shape}"
                )
            return tv_tensors.Mask(torch.from_numpy(mask))
        boxes = np.array([b[:4] for b in record.boxes or ()], dtype=np.float32).reshape(-1, 4)
        labels = torch.tensor([b.label for b in record.boxes or ()], dtype=torch.long)
        return {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(boxes), format="XYXY", canvas_size=tuple(size)
            ),
            "labels": labels,
        }


def _plain(target: Any) -> Any:
    """tv_tensors -> plain tensors (they are only needed while transforming)."""
    if isinstance(target, dict):
        return {k: _plain(v) for k, v in target.items()}
    if isinstance(target, torch.Tensor):
        return target.as_subclass(torch.Tensor)
    return target

"""A torch Dataset over one task's records: cached (or freshly decoded) pixels, augmented jointly
with the target."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from medfoundry.data.augment import AugmentConfig, build_transform
from medfoundry.data.cache import SampleArrays
from medfoundry.data.preprocessing import Preprocessing, fit_to_size, to_channels
from medfoundry.data.readers import decode_record
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

    With ``arrays`` (from ``prepare_arrays``), pixels are read from the preprocessing cache;
    without, every access decodes the file and fits it to ``image_size`` with ``preprocessing``'s
    ``channels`` and ``fit`` (slow, but needs no preparation; masks are then checked only for
    their size). Intensity settings live in the records' readers (see the sources).

    Args:
        records: The task's records (one split).
        target: What to read as the target.
        image_size: Output side in pixels.
        augment: Augmentation (``True``: ``AugmentConfig()`` defaults, ``False``: none).
        arrays: Cached pixels of ``records``, row ``i`` for ``records[i]``.
        preprocessing: Without ``arrays``: the task's channels and fit (default: keep colour,
            stretch).
        ignore_index: Without ``arrays``: mask value of pixels padded by the fit.

    Examples:
        >>> from medfoundry.data import TaskDataset
        >>> ds = TaskDataset([], "label", 32, augment=False)
        >>> len(ds)
        0
    """

    def __init__(
        self,
        records: Sequence[Record],
        target: TargetKind,
        image_size: int,
        *,
        augment: bool | AugmentConfig,
        arrays: SampleArrays | None = None,
        preprocessing: Preprocessing | None = None,
        ignore_index: int = 255,
    ) -> None:
        self.records = list(records)
        self.preprocessing = preprocessing or Preprocessing()
        self.ignore_index = ignore_index
        self.target = target
        self.image_size = image_size
        self.arrays = arrays
        if arrays is not None and len(arrays) != len(self.records):
            raise ValueError(f"{len(arrays)} cached samples for {len(self.records)} records")
        config = augment if isinstance(augment, AugmentConfig) else AugmentConfig.model_validate(augment)
        in_size = arrays.size if arrays is not None and len(arrays) else image_size
        self.transform = build_transform(config, target, in_size, out_size=image_size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        record = self.records[index]
        image, mask, geometry = self._pixels(index, record)
        target = self._target(record, mask, geometry, image.shape[-2:])
        # augmentation draws from torch's global CPU RNG; fork it so the caller's stream is
        # untouched. Seeding only that generator (not torch.manual_seed, which also queues a seed
        # for every accelerator backend, with a stack trace each) keeps a sample well under 1 ms.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            image, target = self.transform(tv_tensors.Image(image), target)
        image = image.as_subclass(torch.Tensor)
        image = image.float().div_(255) if image.dtype == torch.uint8 else image.float()
        return image.expand(3, -1, -1).contiguous(), _plain(target)

    def _pixels(
        self, index: int, record: Record
    ) -> tuple[torch.Tensor, np.ndarray | None, tuple[float, ...]]:
        """``(C, S, S)`` image tensor (uint8 / float16 from the cache, float32 decoded), mask, geometry."""
        if self.arrays is not None:
            image = torch.from_numpy(self.arrays.image(index)).permute(2, 0, 1)
            mask = self.arrays.mask(index) if self.target == "mask" else None
            return image, mask, self.arrays.geometry(index)
        pixels = decode_record(record)
        if self.target == "mask" and (pixels.mask is None or pixels.mask.shape != pixels.image.shape[:2]):
            shape = None if pixels.mask is None else pixels.mask.shape
            raise DataError(
                f"{record.mask}: mask size {shape} differs from image {record.where} {pixels.image.shape[:2]}"
            )
        fitted, mask, geometry = fit_to_size(
            to_channels(pixels.image, self.preprocessing.channels),
            pixels.mask,
            self.image_size,
            fit=self.preprocessing.fit,
            ignore_index=self.ignore_index,
        )
        return torch.from_numpy(fitted).permute(2, 0, 1), mask, geometry

    def _target(
        self, record: Record, mask: np.ndarray | None, geometry: tuple[float, ...], size: torch.Size
    ) -> Any:
        if self.target == "image":
            return None
        if self.target == "label":
            return record.label
        if self.target == "multilabel":
            return torch.tensor(record.labels, dtype=torch.float32)
        if self.target == "mask":
            assert mask is not None
            return tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))
        sx, sy, ox, oy = geometry
        boxes = np.array([b[:4] for b in record.boxes or ()], dtype=np.float32).reshape(-1, 4)
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([ox, oy, ox, oy], np.float32)
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

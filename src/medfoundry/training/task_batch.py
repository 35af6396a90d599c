"""A batch of one task, and the collate function that makes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medfoundry.data.task_dataset import Sample
from medfoundry.tasks.task_type import TaskType

__all__ = ["TaskBatch", "TaskCollate", "move_to"]


@dataclass
class TaskBatch:
    """Images ``(B, 3, H, W)`` float32 in [0, 1] and collated targets of one task."""

    task: str
    images: torch.Tensor
    targets: Any

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False, channels_last: bool = False) -> TaskBatch:
        images = self.images.to(device, non_blocking=non_blocking)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return TaskBatch(self.task, images, move_to(self.targets, device, non_blocking))

    def pin_memory(self) -> TaskBatch:
        """Called by the DataLoader's pin-memory thread."""
        return TaskBatch(self.task, self.images.pin_memory(), _pin(self.targets))


class TaskCollate:
    """Stacks images and lets the task type collate its targets (picklable for workers)."""

    def __init__(self, name: str, task: TaskType) -> None:
        self.name = name
        self.task = task

    def __call__(self, samples: Sequence[Sample]) -> TaskBatch:
        images = torch.stack([image for image, _ in samples])
        return TaskBatch(self.name, images, self.task.collate_targets([t for _, t in samples]))


def move_to(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in nested lists / dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: move_to(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(move_to(v, device, non_blocking) for v in obj)
    return obj


def _pin(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.pin_memory()
    if isinstance(obj, dict):
        return {k: _pin(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_pin(v) for v in obj)
    return obj

"""Datasets and loaders of one task's records for a study cell: from the task's cached pixels,
or decoded at every access (no augmentation unless asked)."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import DataLoader

from medfoundry.data.augment import AugmentConfig
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Record, ignore_index_or_default
from medfoundry.data.task_dataset import TaskDataset
from medfoundry.evaluation.study_pixels import StudyPixels
from medfoundry.tasks.task_type import TaskType
from medfoundry.training.task_batch import TaskCollate

__all__ = ["task_dataset", "task_loader"]


def task_dataset(
    task: TaskType,
    records: Sequence[Record],
    image_size: int,
    augment: bool | AugmentConfig,
    preprocessing: Preprocessing | None,
    pixels: StudyPixels | None,
) -> TaskDataset:
    """The records as a task dataset: from ``pixels`` (the task's cached arrays) when given, else
    decoded at every access with ``preprocessing``."""
    if pixels is not None:
        return TaskDataset(
            records, task.target, image_size, augment=augment, arrays=pixels.arrays(records, image_size)
        )
    return TaskDataset(
        records,
        task.target,
        image_size,
        augment=augment,
        preprocessing=preprocessing,
        ignore_index=ignore_index_or_default(task.ignore_index),
    )


def task_loader(
    name: str,
    task: TaskType,
    records: Sequence[Record],
    image_size: int,
    batch_size: int,
    num_workers: int,
    preprocessing: Preprocessing | None,
    pixels: StudyPixels | None,
) -> DataLoader[object]:
    """Batches of the records in order, without augmentation (validation, test, features)."""
    return DataLoader(
        task_dataset(task, records, image_size, False, preprocessing, pixels),
        batch_size=batch_size,
        collate_fn=TaskCollate(name, task),
        num_workers=num_workers,
    )

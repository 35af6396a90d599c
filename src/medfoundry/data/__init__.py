"""Reading data sources into 2D samples for the tasks."""

from __future__ import annotations

from medfoundry.data.checks import check_mask_values
from medfoundry.data.images import read_image, read_mask
from medfoundry.data.manifest import ManifestSource, read_manifest
from medfoundry.data.record import Box, Record, TargetKind
from medfoundry.data.splits import split_records
from medfoundry.data.task_dataset import Sample, TaskDataset
from medfoundry.data.task_records import load_task_records

__all__ = [
    "Box",
    "ManifestSource",
    "Record",
    "Sample",
    "TargetKind",
    "TaskDataset",
    "check_mask_values",
    "load_task_records",
    "read_image",
    "read_manifest",
    "read_mask",
    "split_records",
]

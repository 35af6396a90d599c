"""Reading every supported format into cached 2D samples for the tasks.

Sources (``medfoundry.data.sources``) list ``Record``s; ``load_task_data`` splits them and
caches their decoded pixels (``prepare_arrays``); ``TaskDataset`` serves augmented samples.
"""

from __future__ import annotations

from medfoundry.data.augment import AugmentConfig, build_transform
from medfoundry.data.cache import CacheSettings, PreparedSplit, SampleArrays, prepare_arrays
from medfoundry.data.checks import sample_problems
from medfoundry.data.fit_inverse import restore_boxes, restore_logits
from medfoundry.data.images import decode_image, read_image, read_mask
from medfoundry.data.intensity import WINDOW_PRESETS_HU, Intensity, Window
from medfoundry.data.label_volumes import put_slice, write_label_volume
from medfoundry.data.masks import MaskValues
from medfoundry.data.preprocessing import Preprocessing, fit_to_size
from medfoundry.data.readers import FileReader, decode_record
from medfoundry.data.record import Box, Pixels, Record, RecordReader, TargetKind
from medfoundry.data.sources import (
    CocoSource,
    DicomSource,
    ImageFolderSource,
    ManifestSource,
    MedMNISTSource,
    SegmentationFoldersSource,
    SourceConfig,
    SourceScan,
    VolumeSource,
    read_manifest,
)
from medfoundry.data.splits import SplitPolicy, split_records
from medfoundry.data.task_dataset import Sample, TaskDataset
from medfoundry.data.task_records import (
    DataSpec,
    TaskData,
    case_variants,
    discard_new_caches,
    load_task_data,
    load_task_records,
    resolve_classes,
)

__all__ = [
    "WINDOW_PRESETS_HU",
    "AugmentConfig",
    "Box",
    "CacheSettings",
    "CocoSource",
    "DataSpec",
    "DicomSource",
    "FileReader",
    "ImageFolderSource",
    "Intensity",
    "ManifestSource",
    "MaskValues",
    "MedMNISTSource",
    "Pixels",
    "Preprocessing",
    "PreparedSplit",
    "Record",
    "RecordReader",
    "Sample",
    "SampleArrays",
    "SegmentationFoldersSource",
    "SourceConfig",
    "SourceScan",
    "SplitPolicy",
    "TargetKind",
    "TaskData",
    "TaskDataset",
    "VolumeSource",
    "Window",
    "build_transform",
    "case_variants",
    "decode_image",
    "decode_record",
    "discard_new_caches",
    "fit_to_size",
    "load_task_data",
    "load_task_records",
    "prepare_arrays",
    "put_slice",
    "read_image",
    "read_manifest",
    "read_mask",
    "resolve_classes",
    "restore_boxes",
    "restore_logits",
    "sample_problems",
    "split_records",
    "write_label_volume",
]

"""Data sources: one module per format, each turning its config into ``Record``s.

``SourceConfig`` is the union of their configs, chosen by the ``type`` key (``manifest`` when
absent, so older task databases keep working).
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import BeforeValidator, Field

from medfoundry.data.sources.base import PredictionReading, SourceBase, SourceScan
from medfoundry.data.sources.coco import CocoSource
from medfoundry.data.sources.dicom_folder import DicomSource
from medfoundry.data.sources.image_folder import ImageFolderSource
from medfoundry.data.sources.manifest import ManifestSource, read_manifest
from medfoundry.data.sources.medmnist import MedMNISTSource
from medfoundry.data.sources.segmentation_folders import SegmentationFoldersSource
from medfoundry.data.sources.volume import VolumeSource

__all__ = [
    "CocoSource",
    "DicomSource",
    "ImageFolderSource",
    "ManifestSource",
    "MedMNISTSource",
    "PredictionReading",
    "SegmentationFoldersSource",
    "SOURCE_TYPES",
    "SourceBase",
    "SourceConfig",
    "SourceScan",
    "VolumeSource",
    "read_manifest",
]


def _default_manifest(value: Any) -> Any:
    return {**value, "type": "manifest"} if isinstance(value, dict) and "type" not in value else value


SourceConfig = Annotated[
    ManifestSource
    | ImageFolderSource
    | SegmentationFoldersSource
    | CocoSource
    | MedMNISTSource
    | DicomSource
    | VolumeSource,
    Field(discriminator="type"),
    BeforeValidator(_default_manifest),
]
"""Any source config; ``type`` picks the format."""

SOURCE_TYPES: dict[str, type[SourceBase]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(get_args(SourceConfig)[0])
}
"""Source ``type`` -> its config class: the members of ``SourceConfig``."""

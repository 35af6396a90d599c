"""What ``medfoundry predict`` reads: INPUT as records of the data layer, with the task's preprocessing.

INPUT is one of what the data layer reads (docs/data.md):

- a 2D image file (PNG, JPEG, TIFF, BMP) or a DICOM file (every frame of a multi-frame file);
- a NIfTI / NRRD volume, sliced as the task's source slices its own volumes (its
  ``prediction_reading``: ``axis``, ``spacing_mm`` and ``volume_index`` of a task trained on
  volumes or DICOM series, else axial slices as stored);
- a CSV/TSV manifest (its ``image`` column);
- a folder of one kind of those: volumes, DICOM files (series become volumes), or images.

The readers get the task's intensity setting (CT windows, percentiles, ...), so new images are
scaled as the training images were. Each sample's id is its file relative to INPUT's folder,
with its position after ``#`` for slices and frames (as ``medfoundry embed`` names them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medfoundry.data.fit_inverse import Geometry
from medfoundry.data.images import IMAGE_SUFFIXES, check_file, is_dicom
from medfoundry.data.preprocessing import Preprocessing, fit_to_size, to_channels
from medfoundry.data.readers import FileReader, decode_record
from medfoundry.data.record import DEFAULT_IGNORE_INDEX, Record
from medfoundry.data.sources import (
    DicomSource,
    ImageFolderSource,
    ManifestSource,
    PredictionReading,
    VolumeSource,
)
from medfoundry.data.sources.base import SourceBase, list_files
from medfoundry.data.volumes import VOLUME_SUFFIXES
from medfoundry.errors import DataError
from medfoundry.recipes.predict.embed import sample_id
from medfoundry.tasks import TaskSpec

__all__ = ["PredictionImages", "as_geometry", "prediction_records"]

KINDS = ("volumes", "DICOM files", "images")


def prediction_records(
    path: Path, spec: TaskSpec, *, volume_index: int | None = None
) -> tuple[list[Record], list[str]]:
    """The samples of INPUT, read as ``spec``'s task reads its data, and their ids
    (``volume_index``: which 3D volume of 4D files, instead of the task's own setting).

    Raises:
        DataError: INPUT is missing, empty, of a kind the data layer does not read, or has an
            unreadable row or file header (every problem at once).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if path.is_file():
        check_file(path)
        name = path.name.lower()
        if name.endswith(IMAGE_SUFFIXES):
            record = Record(path, None, 0, reader=FileReader(spec.preprocessing.intensity))
            return [record], [path.name]
    # a spec without a source (a head built by ``create_task``) was trained on no volumes
    reading = spec.source.prediction_reading() if spec.source is not None else PredictionReading()
    if volume_index is not None:
        reading = dataclasses.replace(reading, volume_index=volume_index)
    source = _source(path, reading)
    scan = source.scan(
        "image", classes=[], preprocessing=spec.preprocessing, ignore_index=DEFAULT_IGNORE_INDEX
    )
    if scan.problems:
        raise DataError(scan.problems)
    root = path if path.is_dir() else path.parent  # a manifest's rows are relative to its folder
    return scan.records, [sample_id(r, root) for r in scan.records]


def _source(path: Path, reading: PredictionReading) -> SourceBase:
    """The data-layer source that reads INPUT (see the module docstring), slicing volumes as
    ``reading`` says (the task's own source's ``prediction_reading``)."""
    if path.is_file():
        name = path.name.lower()
        if name.endswith((".csv", ".tsv")):
            return ManifestSource(path=path)
        if name.endswith(VOLUME_SUFFIXES):
            return _volumes(path, reading)
        if is_dicom(path):
            return _dicom(path, reading)
        raise DataError(
            f"{path}: cannot read this input; give an image (PNG, JPEG, TIFF, BMP), a DICOM file, a "
            "NIfTI/NRRD volume, a CSV/TSV manifest, or a folder of one of these kinds"
        )
    kinds = _kinds(path)
    present = [kind for kind in KINDS if kinds[kind]]
    if not present:
        raise DataError(f"{path}: no images, DICOM files or volumes in this folder")
    if len(present) > 1:
        raise DataError(
            f"{path}: the folder mixes {' and '.join(present)}; give a folder of one kind "
            f"(e.g. {kinds[present[1]][0]} is one of the {present[1]})"
        )
    if present[0] == "volumes":
        return _volumes(path, reading)
    if present[0] == "DICOM files":
        return _dicom(path, reading)
    return ImageFolderSource(type="image_folder", path=path, extensions=IMAGE_SUFFIXES)


def _volumes(path: Path, reading: PredictionReading) -> VolumeSource:
    return VolumeSource(
        type="volume",
        images=path,
        axis=reading.axis,
        spacing_mm=reading.spacing_mm,
        volume_index=reading.volume_index,
    )


def _dicom(path: Path, reading: PredictionReading) -> DicomSource:
    return DicomSource(type="dicom", path=path, axis=reading.axis, spacing_mm=reading.spacing_mm)


def _kinds(folder: Path) -> dict[str, list[Path]]:
    files = list_files(folder, [""])  # every file, sorted; hidden files are passed over
    kinds: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    for file in files:
        name = file.name.lower()
        if name.endswith(VOLUME_SUFFIXES):
            kinds["volumes"].append(file)
        elif name.endswith(IMAGE_SUFFIXES):
            kinds["images"].append(file)
        elif file.stat().st_size > 0 and is_dicom(file):
            kinds["DICOM files"].append(file)
    return kinds


class PredictionImages(Dataset[tuple[Any, ...]]):
    """Each record decoded and fitted exactly as the task's evaluation sees it (``TaskDataset``
    without augmentation or cache), with what is needed to undo the fit.

    Items: image ``(3, S, S)`` float32 in [0, 1], the record's index, the fit's geometry ``(4,)``
    float64 and the decoded ``(H, W)``.

    Args:
        records: The samples.
        image_size: The model's input side.
        preprocessing: The task's preprocessing (channels, fit).
    """

    def __init__(self, records: list[Record], image_size: int, preprocessing: Preprocessing) -> None:
        self.records = records
        self.image_size = image_size
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        image = decode_record(self.records[index]).image
        fitted, _, geometry = fit_to_size(
            to_channels(image, self.preprocessing.channels),
            None,
            self.image_size,
            fit=self.preprocessing.fit,
            ignore_index=0,
        )
        tensor = torch.from_numpy(fitted).permute(2, 0, 1).float().expand(3, -1, -1).contiguous()
        return tensor, index, torch.tensor(geometry, dtype=torch.float64), torch.tensor(image.shape[:2])


def as_geometry(row: torch.Tensor) -> Geometry:
    """A collated geometry row as the tuple ``restore_logits`` and ``restore_boxes`` take."""
    sx, sy, ox, oy = (float(v) for v in row.tolist())
    return sx, sy, ox, oy

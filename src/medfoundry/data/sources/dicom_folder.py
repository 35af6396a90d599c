"""DICOM source: a folder of DICOM files (or one file), as 2D images and volumes.

Files are recognised by a ``.dcm`` suffix or the ``DICM`` preamble, whatever their name (many
archives use none). Files are grouped by ``SeriesInstanceUID``: a series of two or more
single-frame slices with one orientation (CT, MR) is read as a volume and sliced along
``axis``; any other file (CR, DX, a single slice, multi-frame ultrasound) gives one sample per
frame. DICOM objects without an image (structured reports, DICOMDIR, RT structures) are passed
over. Each sample's group is the ``PatientID`` (so one patient never straddles splits; the
series UID where it is empty), its center the ``InstitutionName``. Classification labels can
come from a header keyword (``label_tag``, e.g. ``Modality`` or ``BodyPartExamined``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import pydicom

from medfoundry.data.dicom import DicomSeriesLoader, read_dicom_header, series_shape, sort_series
from medfoundry.data.images import is_dicom
from medfoundry.data.intensity import VoiIntensity
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.readers import FileReader
from medfoundry.data.record import Record, TargetKind
from medfoundry.data.sources.base import PredictionReading, SourceBase, SourceScan
from medfoundry.data.volumes import AXES, Axis, VolumeSliceReader
from medfoundry.errors import DataError

__all__ = ["DicomSource"]


class DicomSource(SourceBase):
    """DICOM files below a folder.

    Args:
        path: A folder (searched recursively) or one file.
        axis: Slicing direction of volumes (``axial``, ``coronal``, ``sagittal``).
        spacing_mm: In-plane ``[row, col]`` spacing volumes' slices are resampled to.
        label_tag: DICOM keyword whose value is the class (classification tasks).
    """

    targets = ("label", "image")

    type: Literal["dicom"]
    path: Path
    axis: Axis = "axial"
    spacing_mm: tuple[float, float] | None = None
    label_tag: str | None = None

    def infer_classes(self, target: TargetKind) -> list[str]:
        if target != "label":
            return super().infer_classes(target)
        headers, _, _ = self._headers()
        return sorted({str(ds.get(self._tag(), "")).strip() for _, ds in headers} - {""})

    def prediction_reading(self) -> PredictionReading:
        """New volumes are sliced as this source slices its own."""
        return PredictionReading(self.axis, self.spacing_mm)

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        if target == "label":
            self._tag()
        headers, problems, notes = self._headers()
        series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
        for path, ds in headers:
            series[str(ds.get("SeriesInstanceUID", path))].append((path, ds))
        volumes: dict[Path, tuple[Path, ...]] = {}
        singles: list[tuple[Path, pydicom.Dataset]] = []
        for members in series.values():
            ordered = sort_series(members)
            if ordered is None:
                singles += members
            else:
                volumes[ordered[0]] = tuple(ordered)
        intensity = preprocessing.intensity
        auto_voi = VoiIntensity() if intensity.type == "auto" else intensity  # see ``dicom``
        volume_reader = VolumeSliceReader(
            self.axis, self.spacing_mm, auto_voi, None, load=DicomSeriesLoader(volumes)
        )
        file_reader = FileReader(intensity)
        by_path = dict(headers)
        records: list[Record] = []
        for first, files in volumes.items():
            ds = by_path[first]
            shape = series_shape([by_path[f] for f in files])
            try:
                extra = self._fields(ds, first, target, classes)
            except DataError as e:
                problems.extend(e.problems)
                continue
            records += [
                Record(first, None, len(records), frame=k, reader=volume_reader, **extra)
                for k in range(shape[AXES[self.axis]])
            ]
        for path, ds in sorted(singles, key=lambda item: item[0]):
            try:
                extra = self._fields(ds, path, target, classes)
            except DataError as e:
                problems.extend(e.problems)
                continue
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            records += [
                Record(path, None, len(records), frame=k if frames > 1 else None, reader=file_reader, **extra)
                for k in range(frames)
            ]
        if not records and not problems:
            raise DataError(f"{self.path}: no DICOM images found")
        return SourceScan(records, problems, notes)

    def _headers(self) -> tuple[list[tuple[Path, pydicom.Dataset]], list[str], list[str]]:
        """Image headers, problems (damaged files) and notes (files passed over)."""
        if self.path.is_file():
            candidates = [self.path]
        elif self.path.is_dir():
            candidates = sorted(p for p in self.path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            raise DataError(f"{self.path}: file or folder not found")
        headers, problems, notes = [], [], []
        for path in candidates:
            try:
                if path.stat().st_size == 0:
                    raise DataError(f"{path}: file is empty (0 bytes)")
                if not is_dicom(path):
                    notes.append(f"{path}: not a DICOM file; passed over")
                    continue
                ds = read_dicom_header(path)
            except DataError as e:
                problems.extend(e.problems)
                continue
            if "Rows" in ds and "Columns" in ds:  # an image, not a report or a directory
                headers.append((path, ds))
                continue
            sop_class = _sop_class(ds)
            if sop_class is None or "Image Storage" in sop_class.name:
                what = f"a {sop_class.name} object" if sop_class is not None else "a DICOM file"
                problems.append(
                    f"{path}: {what} whose header ends before the image size (Rows, Columns): "
                    "the file is truncated or damaged"
                )
            else:
                notes.append(f"{path}: {sop_class.name} object without an image; passed over")
        return headers, problems, notes

    def _tag(self) -> str:
        if not self.label_tag or self.label_tag not in pydicom.datadict.keyword_dict:
            raise DataError(
                f"{self.path}: a classification task from DICOM needs label_tag, a DICOM keyword such as "
                f"Modality or BodyPartExamined (got {self.label_tag!r})"
            )
        return self.label_tag

    def _fields(
        self, ds: pydicom.Dataset, path: Path, target: TargetKind, classes: list[str]
    ) -> dict[str, Any]:
        group = str(ds.get("PatientID", "") or ds.get("SeriesInstanceUID", "") or path)
        fields: dict[str, Any] = {"group": group, "center": str(ds.get("InstitutionName", "")) or None}
        if target == "label":
            value = str(ds.get(self._tag(), "")).strip()
            if value not in classes:
                raise DataError(
                    f"{path}: {self.label_tag} '{value}' is not a declared class ({', '.join(classes)})"
                )
            fields["label"] = classes.index(value)
        return fields


def _sop_class(ds: pydicom.Dataset) -> pydicom.uid.UID | None:
    """The SOP class (what kind of object a file holds), from the file meta or the dataset."""
    meta = getattr(ds, "file_meta", None)
    uid = (meta.get("MediaStorageSOPClassUID") if meta is not None else None) or ds.get("SOPClassUID")
    return pydicom.uid.UID(str(uid)) if uid else None

"""Volume source: NIfTI (``.nii``, ``.nii.gz``) and NRRD (``.nrrd``, ``.nhdr``) volumes, with
optional label volumes, sliced to 2D along one axis.

``images`` and ``labels`` are folders (searched recursively) or single files; the label volume
of ``images/case_01.nii.gz`` is the file in ``labels`` named ``case_01`` + ``label_suffix``
(any of the volume extensions). Every slice of one volume gets that volume's name as its
group, so slices of one scan never straddle train, validation and test. Slice selection
(``slices``): ``all``; or ``foreground`` (slices with any labelled voxel) plus
``background_ratio`` background slices per foreground slice. See ``medfoundry.data.volumes``
for orientation, intensity and resampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medfoundry.data.masks import MaskValues
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Record, TargetKind
from medfoundry.data.sources.base import SourceBase, SourceScan, file_stem, list_files
from medfoundry.data.volumes import (
    AXES,
    VOLUME_SUFFIXES,
    Axis,
    VolumeSliceReader,
    canonical_shape,
    load_volume,
    select_slices,
)
from medfoundry.errors import ConfigError, DataError

__all__ = ["VolumeSource"]


class VolumeSource(SourceBase):
    """NIfTI / NRRD volumes (and label volumes) sliced to 2D.

    Args:
        images: Folder of volumes, or one volume file.
        labels: Folder of label volumes (or one file), matched to images by name.
        label_suffix: What a label volume's name adds to its image's name.
        axis: ``axial``, ``coronal`` or ``sagittal`` (after reorientation to RAS+).
        spacing_mm: In-plane ``[row, col]`` spacing to resample each slice to; ``None`` keeps it.
        slices: ``all`` or ``foreground`` (needs ``labels``).
        background_ratio: With ``foreground``: background slices added per foreground slice.
        volume_index: Which 3D volume of 4D files (e.g. a time point).
        mask_values: Stored label value -> class name (see ``medfoundry.data.masks``).
    """

    targets = ("mask", "image")

    type: Literal["volume"]
    images: Path
    labels: Path | None = None
    label_suffix: str = ""
    axis: Axis = "axial"
    spacing_mm: tuple[float, float] | None = None
    slices: Literal["all", "foreground"] = "all"
    background_ratio: float = Field(default=0.0, ge=0)
    volume_index: int | None = Field(default=None, ge=0)
    mask_values: MaskValues = None

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        if (target == "mask" or self.slices == "foreground") and self.labels is None:
            raise ConfigError(
                f"{self.images}: set 'labels' (label volumes) for a segmentation task or slices: foreground"
            )
        volumes = _volume_files(self.images)
        labels = self._label_files() if self.labels is not None else {}
        mapping = self._mask_mapping(classes, ignore_index) if target == "mask" else None
        reader = VolumeSliceReader(
            self.axis, self.spacing_mm, preprocessing.intensity, mapping, self.volume_index
        )
        background = {0, ignore_index}
        if mapping is not None and mapping.lookup is not None:
            background = {stored for stored, index in mapping.lookup if index == 0} | {ignore_index}
        records: list[Record] = []
        problems: list[str] = []
        for volume in volumes:
            label = labels.get(file_stem(volume) + self.label_suffix)
            try:
                if self.labels is not None and label is None:
                    name = file_stem(volume) + self.label_suffix
                    raise DataError(f"{volume}: no label volume named {name}.* in {self.labels}")
                indices = self._slices(volume, label, background)
            except DataError as e:
                problems.extend(e.problems)
                continue
            group = file_stem(volume)
            records += [
                Record(
                    volume,
                    None,
                    len(records) + i,
                    mask=label if target == "mask" else None,
                    group=group,
                    frame=k,
                    reader=reader,
                )
                for i, k in enumerate(indices)
            ]
        return SourceScan(records, problems)

    def _label_files(self) -> dict[str, Path]:
        assert self.labels is not None
        return {file_stem(f): f for f in _volume_files(self.labels)}

    def _slices(self, volume: Path, label: Path | None, background: set[int]) -> list[int]:
        shape = canonical_shape(volume)
        if label is not None:
            label_shape = canonical_shape(label)
            if label_shape != shape:
                raise DataError(
                    f"{label}: label volume shape {label_shape} differs from image {volume} shape {shape} "
                    "(after reorientation to RAS)"
                )
        if self.slices == "all" or label is None:
            return list(range(shape[AXES[self.axis]]))
        return select_slices(
            load_volume(label, None).data, self.axis, "foreground", self.background_ratio, background
        )


def _volume_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = list_files(path, VOLUME_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no volumes ({', '.join(VOLUME_SUFFIXES)}) in this folder")
    return files

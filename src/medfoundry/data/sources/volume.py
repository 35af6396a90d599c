"""Volume source: NIfTI (``.nii``, ``.nii.gz``) and NRRD (``.nrrd``, ``.nhdr``) volumes, with
optional label volumes, sliced to 2D along one axis.

``images`` and ``labels`` are folders (searched recursively) or single files; the label volume
of ``images/case_01.nii.gz`` is the file in ``labels`` named ``case_01`` + ``label_suffix``
(any of the volume extensions); with an ``image_suffix`` that part of the image's name is
replaced (``case_01_image.nii.gz`` -> ``case_01_label.nii.gz``), so images and labels can
share one folder. Two single files are simply a pair, whatever their names. A 4D file needs
``volume_index`` (a trailing axis of length 1 is dropped); that is checked from the header,
once per file. Every slice of one volume gets that volume's name (without ``image_suffix``)
as its group, so slices of one scan never straddle train, validation and test. Slice selection
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
from medfoundry.data.sources.base import (
    FilePair,
    PredictionReading,
    SourceBase,
    SourceScan,
    file_stem,
    list_files,
    pair_files,
)
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
        image_suffix: What an image's name adds to the shared name (``_image`` for
            ``case_image.nii.gz`` with ``case_label.nii.gz``).
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
    image_suffix: str = ""
    axis: Axis = "axial"
    spacing_mm: tuple[float, float] | None = None
    slices: Literal["all", "foreground"] = "all"
    background_ratio: float = Field(default=0.0, ge=0)
    volume_index: int | None = Field(default=None, ge=0)
    mask_values: MaskValues = None

    def prediction_reading(self) -> PredictionReading:
        """New volumes are sliced as this source slices its own."""
        return PredictionReading(self.axis, self.spacing_mm, self.volume_index)

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        if (target == "mask" or self.slices == "foreground") and self.labels is None:
            raise ConfigError(
                f"{self.images}: set 'labels' (label volumes) for a segmentation task or slices: foreground"
            )
        pairs = self._pairs()
        mapping = self._mask_mapping(classes, ignore_index) if target == "mask" else None
        reader = VolumeSliceReader(
            self.axis, self.spacing_mm, preprocessing.intensity, mapping, self.volume_index
        )
        background = {0, ignore_index}
        if mapping is not None and mapping.lookup is not None:
            background = {stored for stored, index in mapping.lookup if index == 0} | {ignore_index}
        records: list[Record] = []
        problems: list[str] = []
        for pair in pairs:
            try:
                if self.labels is not None and pair.annotation is None:
                    raise DataError(f"{pair.image}: no label volume named {pair.wanted}.* in {self.labels}")
                indices = self._slices(pair.image, pair.annotation, background)
            except DataError as e:
                problems.extend(e.problems)
                continue
            records += [
                Record(
                    pair.image,
                    None,
                    len(records) + i,
                    mask=pair.annotation if target == "mask" else None,
                    group=pair.case,
                    frame=k,
                    reader=reader,
                )
                for i, k in enumerate(indices)
            ]
        return SourceScan(records, problems)

    def _pairs(self) -> list[FilePair]:
        volumes = _volume_files(self.images)
        if self.labels is None:
            return pair_files(volumes, [], image_suffix=self.image_suffix)[0]
        if self.images.is_file() and self.labels.is_file():  # two files: a pair, whatever their names
            return [FilePair(self.images, file_stem(self.images), file_stem(self.labels), self.labels)]
        return pair_files(
            volumes,
            _volume_files(self.labels),
            image_suffix=self.image_suffix,
            annotation_suffix=self.label_suffix,
        )[0]

    def _slices(self, volume: Path, label: Path | None, background: set[int]) -> list[int]:
        shape = canonical_shape(volume, self.volume_index)
        if label is not None:
            label_shape = canonical_shape(label, None)
            if label_shape != shape:
                raise DataError(
                    f"{label}: label volume shape {label_shape} differs from image {volume} shape {shape} "
                    "(after reorientation to RAS)"
                )
        if self.slices == "all" or label is None:
            return list(range(shape[AXES[self.axis]]))
        return select_slices(
            load_volume(label, None).data,
            self.axis,
            "foreground",
            background_ratio=self.background_ratio,
            background_values=background,
        )


def _volume_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = list_files(path, VOLUME_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no volumes ({', '.join(VOLUME_SUFFIXES)}) in this folder")
    return files

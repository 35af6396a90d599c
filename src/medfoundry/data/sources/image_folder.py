"""Image folder source: one subfolder per class (``path/<class>/*.png``), or any images.

Layouts:

- ``path/<class>/...`` (classification; files may sit in deeper folders);
- with ``split_folders: true``: ``path/<train|val|test>/<class>/...``;
- for unlabelled data (``image`` target), every image below ``path``.

Classes not declared by the task are the sorted subfolder names. Files are PNG, JPEG, TIFF,
BMP or DICOM (``extensions``); others (notes, thumbnails' metadata) are passed over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from medfoundry.data.images import IMAGE_SUFFIXES
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.readers import FileReader
from medfoundry.data.record import Record, TargetKind
from medfoundry.data.sources.base import PredictionReading, SourceBase, SourceScan, list_files
from medfoundry.data.sources.manifest import SPLITS
from medfoundry.errors import DataError

__all__ = ["ImageFolderSource"]


class ImageFolderSource(SourceBase):
    """A folder of images, one subfolder per class.

    Args:
        path: The folder.
        split_folders: The first level below ``path`` is ``train`` / ``val`` / ``test``.
        extensions: File name endings that count as images.
    """

    targets = ("label", "image")

    type: Literal["image_folder"]
    path: Path
    split_folders: bool = False
    extensions: tuple[str, ...] = (*IMAGE_SUFFIXES, ".dcm")

    def infer_classes(self, target: TargetKind) -> list[str]:
        if target != "label":
            return super().infer_classes(target)
        return sorted({folder.name for folder, _ in self._class_folders()})

    def prediction_reading(self) -> PredictionReading:
        """2D images: new volumes are read as stored, in axial slices."""
        return PredictionReading()

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        reader = FileReader(preprocessing.intensity)
        if target == "image":
            files = list_files(self.path, self.extensions)
            if not files:
                raise DataError(
                    f"{self.path}: no image files ({', '.join(self.extensions)}) below this folder"
                )
            return SourceScan([Record(f, None, i, reader=reader) for i, f in enumerate(files)])
        records: list[Record] = []
        problems: list[str] = []
        for folder, split in self._class_folders():
            if folder.name not in classes:
                problems.append(
                    f"{folder}: subfolder '{folder.name}' is not a declared class ({', '.join(classes)}); "
                    "its images are left out"
                )
                continue
            label = classes.index(folder.name)
            for file in list_files(folder, self.extensions):
                records.append(Record(file, split, len(records), label=label, reader=reader))
        if not records and not problems:
            raise DataError(f"{self.path}: no images in class subfolders ({', '.join(self.extensions)})")
        return SourceScan(records, problems)

    def _class_folders(self) -> list[tuple[Path, str | None]]:
        if not self.path.is_dir():
            raise DataError(f"{self.path}: folder not found")
        if not self.split_folders:
            return [(f, None) for f in _subfolders(self.path)]
        splits = [f for f in _subfolders(self.path) if f.name in SPLITS]
        if not splits:
            raise DataError(f"{self.path}: split_folders is set but there is no train/val/test subfolder")
        return [(c, split.name) for split in splits for c in _subfolders(split)]


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

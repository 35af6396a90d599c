"""Segmentation pairs: a folder of images and a folder of masks, matched by file name.

The mask of ``images/case_01.png`` is the file in ``masks`` whose name without extension is
``case_01`` + ``mask_suffix`` (e.g. ``case_01_mask.tif`` with ``mask_suffix: _mask``); image and
mask may have different formats (masks: PNG, TIFF, NIfTI). Images without a mask, and masks
without an image, are reported.

With ``mask_values: instances`` the masks are instance masks (0 = background, one id per
object). A segmentation task then learns background / object, and a detection task (one
class) gets one box per instance: the bounding box of its pixels (from
``scipy.ndimage.find_objects``), which is how boxes are derived honestly from instance masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from scipy import ndimage

from medfoundry.data.images import IMAGE_SUFFIXES, read_mask
from medfoundry.data.masks import MaskValues
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.readers import FileReader
from medfoundry.data.record import Box, Record, TargetKind
from medfoundry.data.sources.base import SourceBase, SourceScan, file_stem, list_files
from medfoundry.errors import ConfigError, DataError

__all__ = ["SegmentationFoldersSource"]

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".nii", ".nii.gz", ".bmp")


class SegmentationFoldersSource(SourceBase):
    """Image and mask folders matched by name.

    Args:
        images: Folder of images (searched recursively).
        masks: Folder of masks (searched recursively).
        mask_suffix: What the mask's name adds to the image's name (before the extension).
        mask_values: Stored mask value -> class name, or ``instances`` (see module docstring).
    """

    targets = ("mask", "boxes", "image")

    type: Literal["segmentation_folders"]
    images: Path
    masks: Path
    mask_suffix: str = ""
    mask_values: MaskValues = None

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        images = list_files(self.images, (*IMAGE_SUFFIXES, ".dcm"))
        shared = self.images.resolve() == self.masks.resolve()
        if shared and self.mask_suffix:  # one folder: the masks are the files with the suffix
            images = [f for f in images if not file_stem(f).endswith(self.mask_suffix)]
        if not images:
            raise DataError(f"{self.images}: no image files in this folder")
        if target == "image":
            reader = FileReader(preprocessing.intensity)
            return SourceScan([Record(f, None, i, reader=reader) for i, f in enumerate(images)])
        if target == "boxes" and (self.mask_values != "instances" or len(classes) != 1):
            raise ConfigError(
                f"{self.images}: boxes come from instance masks: set mask_values: instances and "
                "declare exactly one class"
            )
        masks: dict[str, Path] = {}
        for mask in list_files(self.masks, MASK_SUFFIXES):
            masks.setdefault(file_stem(mask), mask)
        mapping = None if target == "boxes" else self._mask_mapping(classes, ignore_index)
        reader = FileReader(preprocessing.intensity, mapping)
        records, problems, used = [], [], set()
        for i, image in enumerate(images):
            key = file_stem(image) + self.mask_suffix
            mask_path = masks.get(key)
            if mask_path is None:
                problems.append(f"{image}: no mask named {key}.* in {self.masks}")
                continue
            used.add(key)
            if target == "mask":
                records.append(Record(image, None, i, mask=mask_path, reader=reader))
                continue
            try:
                records.append(Record(image, None, i, boxes=_instance_boxes(mask_path), reader=reader))
            except DataError as e:
                problems.extend(e.problems)
        if not shared:
            problems += [
                f"{masks[k]}: mask without a matching image in {self.images}"
                for k in sorted(set(masks) - used)
            ]
        return SourceScan(records, problems)


def _instance_boxes(mask_path: Path) -> tuple[Box, ...]:
    ids = read_mask(mask_path)
    boxes = []
    for found in ndimage.find_objects(ids.clip(min=0)):
        if found is not None:  # ids missing from the mask have no slices
            rows, cols = found
            boxes.append(Box(float(cols.start), float(rows.start), float(cols.stop), float(rows.stop), 0))
    return tuple(boxes)

"""Segmentation pairs: a folder of images and a folder of masks, matched by file name.

The mask of ``images/case_01.png`` is the file in ``masks`` whose name without extension is
``case_01`` + ``mask_suffix`` (e.g. ``case_01_mask.tif`` with ``mask_suffix: _mask``); with an
``image_suffix`` that part of the image's name is replaced (``case_01_image.png`` ->
``case_01_mask.png``). Images and masks may share one folder, told apart by the suffixes, and
may have different formats (masks: PNG, TIFF, NIfTI). Images without a mask, and masks without
an image, are reported.

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
from medfoundry.data.sources.base import PredictionReading, SourceBase, SourceScan, list_files, pair_files
from medfoundry.errors import ConfigError, DataError

__all__ = ["SegmentationFoldersSource"]

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".nii", ".nii.gz", ".bmp")


class SegmentationFoldersSource(SourceBase):
    """Image and mask folders matched by name.

    Args:
        images: Folder of images (searched recursively).
        masks: Folder of masks (searched recursively).
        mask_suffix: What the mask's name adds to the image's name (before the extension).
        image_suffix: What the image's name adds to the shared name (``case_image.png`` with
            ``case_mask.png``: ``_image``, with ``mask_suffix: _mask``).
        mask_values: Stored mask value -> class name, or ``instances`` (see module docstring).
    """

    targets = ("mask", "boxes", "image")

    type: Literal["segmentation_folders"]
    images: Path
    masks: Path
    mask_suffix: str = ""
    image_suffix: str = ""
    mask_values: MaskValues = None

    def prediction_reading(self) -> PredictionReading:
        """2D images: new volumes are read as stored, in axial slices."""
        return PredictionReading()

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        images = list_files(self.images, (*IMAGE_SUFFIXES, ".dcm"))
        if target == "image":
            if self.images.resolve() == self.masks.resolve() and (self.image_suffix or self.mask_suffix):
                pairs, _ = pair_files(
                    images, images, image_suffix=self.image_suffix, annotation_suffix=self.mask_suffix
                )
                images = [pair.image for pair in pairs]
            if not images:
                raise DataError(f"{self.images}: no image files in this folder")
            reader = FileReader(preprocessing.intensity)
            return SourceScan([Record(f, None, i, reader=reader) for i, f in enumerate(images)])
        if target == "boxes" and (self.mask_values != "instances" or len(classes) != 1):
            raise ConfigError(
                f"{self.images}: boxes come from instance masks: set mask_values: instances and "
                "declare exactly one class"
            )
        pairs, unused = pair_files(
            images,
            list_files(self.masks, MASK_SUFFIXES),
            image_suffix=self.image_suffix,
            annotation_suffix=self.mask_suffix,
        )
        if not pairs:
            raise DataError(f"{self.images}: no image files in this folder")
        mapping = None if target == "boxes" else self._mask_mapping(classes, ignore_index)
        reader = FileReader(preprocessing.intensity, mapping)
        records, problems = [], []
        for i, pair in enumerate(pairs):
            if pair.annotation is None:
                problems.append(f"{pair.image}: no mask named {pair.wanted}.* in {self.masks}")
                continue
            if target == "mask":
                records.append(Record(pair.image, None, i, mask=pair.annotation, reader=reader))
                continue
            try:
                boxes = _instance_boxes(pair.annotation)
                records.append(Record(pair.image, None, i, boxes=boxes, reader=reader))
            except DataError as e:
                problems.extend(e.problems)
        problems += [f"{mask}: mask without a matching image in {self.images}" for mask in unused]
        return SourceScan(records, problems)


def _instance_boxes(mask_path: Path) -> tuple[Box, ...]:
    ids = read_mask(mask_path)
    boxes = []
    for found in ndimage.find_objects(ids.clip(min=0)):
        if found is not None:  # ids missing from the mask have no slices
            rows, cols = found
            boxes.append(Box(float(cols.start), float(rows.start), float(cols.stop), float(rows.stop), 0))
    return tuple(boxes)

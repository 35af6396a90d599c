"""COCO detection source: a COCO JSON file (``images``, ``annotations``, ``categories``).

Category ids are remapped to the task's class indices by category *name*, so ids need not be
contiguous. Classes not declared by the task are the category names in id order. Boxes are
COCO ``[x, y, width, height]`` in pixels; images without annotations are kept (no objects).
Annotations marked ``iscrowd: 1`` are left out (they cover groups, not single objects).
An annotation whose category is not in ``categories`` or not declared, a box with zero or
negative size, or one outside the image (by more than 1 pixel) is reported with its id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.readers import FileReader
from medfoundry.data.record import Box, Record, TargetKind
from medfoundry.data.sources.base import (
    EDGE_TOLERANCE_PX,
    PredictionReading,
    SourceBase,
    SourceScan,
    make_box,
)
from medfoundry.errors import DataError

__all__ = ["CocoSource"]


class CocoSource(SourceBase):
    """A COCO detection file.

    Args:
        path: The JSON file.
        images: Folder that ``file_name`` is relative to; default: the JSON file's folder.
    """

    targets = ("boxes", "image")

    type: Literal["coco"]
    path: Path
    images: Path | None = None

    def infer_classes(self, target: TargetKind) -> list[str]:
        if target != "boxes":
            return super().infer_classes(target)
        return [name for _, name in sorted(self._categories(self._read()).items())]

    def prediction_reading(self) -> PredictionReading:
        """2D images: new volumes are read as stored, in axial slices."""
        return PredictionReading()

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        data = self._read()
        categories = self._categories(data)
        root = self.images or self.path.parent
        problems: list[str] = []
        notes: list[str] = []
        boxes: dict[Any, list[Box]] = {}
        images: dict[Any, dict[str, Any]] = {}
        for image in data["images"]:
            if not (isinstance(image, dict) and _is_id(image.get("id")) and "file_name" in image):
                problems.append(f"{self.path}: an image entry lacks 'id' or 'file_name': {str(image)[:80]}")
                continue
            images[image["id"]] = image
            boxes[image["id"]] = []
        for ann in data["annotations"] if target == "boxes" else []:
            if not isinstance(ann, dict):
                problems.append(f"{self.path}: an annotation is not a JSON object: {str(ann)[:80]}")
                continue
            where = f"{self.path}: annotation {ann.get('id', '?')}"
            try:
                if ann.get("iscrowd", 0):
                    notes.append(f"{where}: iscrowd annotation (a group, not one object) left out")
                    continue
                image = images[self._image_id(ann, images, where)]
                box = self._box(ann, image, categories, classes, where)
                if box[:4] != tuple(self._xyxy(ann)):
                    notes.append(f"{where}: bbox {ann['bbox']} clipped to the image ({box[:4]})")
                boxes[ann["image_id"]].append(box)
            except DataError as e:
                problems.extend(e.problems)
        reader = FileReader(preprocessing.intensity)
        records, seen = [], set()
        for i, (image_id, image) in enumerate(images.items()):
            path = root / str(image["file_name"])
            if path in seen:
                problems.append(f"{self.path}: image {image_id}: file {path} is listed twice")
                continue
            if not path.is_file():
                problems.append(f"{self.path}: image {image_id}: file not found: {path}")
                continue
            seen.add(path)
            record_boxes = tuple(boxes[image_id]) if target == "boxes" else None
            records.append(Record(path, None, i, boxes=record_boxes, reader=reader))
        return SourceScan(records, problems, notes)

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise DataError(f"{self.path}: COCO annotation file not found")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{self.path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise DataError(f"{self.path}: a COCO file is a JSON object with images, annotations, categories")
        missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
        if missing:
            raise DataError(f"{self.path}: a COCO file needs the lists {', '.join(missing)}")
        return data  # type: ignore[no-any-return]

    def _categories(self, data: dict[str, Any]) -> dict[Any, str]:
        categories: dict[Any, str] = {}
        for category in data["categories"]:
            if not (isinstance(category, dict) and _is_id(category.get("id")) and "name" in category):
                raise DataError(f"{self.path}: a category needs an 'id' and a 'name': {str(category)[:80]}")
            if category.get("id") in categories:
                raise DataError(f"{self.path}: category id {category.get('id')} is listed twice")
            categories[category.get("id")] = str(category.get("name"))
        return categories

    @staticmethod
    def _image_id(ann: dict[str, Any], images: dict[Any, Any], where: str) -> Any:
        if not _is_id(ann.get("image_id")) or ann.get("image_id") not in images:
            raise DataError(f"{where}: image_id {ann.get('image_id')} is not in 'images'")
        return ann["image_id"]

    @staticmethod
    def _xyxy(ann: dict[str, Any]) -> list[float]:
        x, y, w, h = (float(v) for v in ann["bbox"])
        return [x, y, x + w, y + h]

    @staticmethod
    def _box(
        ann: dict[str, Any], image: dict[str, Any], categories: dict[Any, str], classes: list[str], where: str
    ) -> Box:
        if not _is_id(ann.get("category_id")) or ann.get("category_id") not in categories:
            raise DataError(f"{where}: category_id {ann.get('category_id')} is not in 'categories'")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise DataError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        box = make_box([x, y, x + w, y + h], categories[ann["category_id"]], classes, where=f"{where}: bbox")
        width, height = image.get("width"), image.get("height")
        if isinstance(width, int | float) and isinstance(height, int | float):
            t = EDGE_TOLERANCE_PX
            if box.x1 < -t or box.y1 < -t or box.x2 > width + t or box.y2 > height + t:
                raise DataError(
                    f"{where}: bbox {bbox} lies outside image {image.get('file_name')} ({width}x{height})"
                )
            box = Box(max(box.x1, 0), max(box.y1, 0), min(box.x2, width), min(box.y2, height), box.label)
        return box


def _is_id(value: Any) -> bool:
    """COCO ids are numbers (some tools write strings); anything else cannot key a lookup."""
    return isinstance(value, int | str) and not isinstance(value, bool)

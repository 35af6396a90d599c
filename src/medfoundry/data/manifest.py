"""CSV/TSV manifest source: one row per image, with its label, mask path or boxes.

Columns (names configurable):

- ``image``: image path, relative to the manifest's folder (or ``root``);
- classification: ``label``, a class name;
- multilabel: one column per class, holding 1, 0, or empty / -1 / NaN for "not labelled";
- segmentation: ``mask``, path of an integer mask whose pixel value ``i`` is ``classes[i]``;
- detection: ``boxes``, a JSON list of ``[x1, y1, x2, y2, "class"]`` in pixels of the image
  (an empty list for an image without objects);
- unlabelled data (``image`` target): only the image column;
- optional ``split`` (``train``, ``val`` or ``test``), ``group`` (patient/volume id) and
  ``center`` (acquisition site) columns.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from medfoundry.data.record import Box, Record, TargetKind
from medfoundry.errors import DataError

__all__ = ["ManifestSource", "read_manifest"]

SPLITS = ("train", "val", "test")
MISSING = {"", "-1", "nan", "NaN", "NA", "na", "none", "None"}


class ManifestSource(BaseModel):
    """A CSV (``,``) or TSV (``.tsv``, tab) manifest.

    Args:
        path: The manifest file. Relative paths in a config are relative to that config file.
        root: Folder that image and mask paths are relative to; default: the manifest's folder.
        image_column: Column holding image paths.
        label_column: Classification label column.
        mask_column: Segmentation mask path column.
        boxes_column: Detection boxes column.
        split_column: Column with ``train``/``val``/``test``; used when present.
        group_column: Column with a patient / volume id; used when present.
        center_column: Column with the acquisition site; used when present.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["manifest"] = "manifest"
    path: Path
    root: Path | None = None
    image_column: str = "image"
    label_column: str = "label"
    mask_column: str = "mask"
    boxes_column: str = "boxes"
    split_column: str = "split"
    group_column: str = "group"
    center_column: str = "center"


def read_manifest(source: ManifestSource, target: TargetKind, classes: list[str]) -> list[Record]:
    """Parse a manifest into records, checking every row.

    Args:
        source: The manifest to read.
        target: What the task needs from each row.
        classes: Declared class names; labels outside them are errors.

    Returns:
        One record per row, in file order.

    Raises:
        DataError: listing every bad row (file, row number, column, what is wrong).
    """
    path = source.path
    if not path.is_file():
        raise DataError(f"{path}: manifest file not found")
    root = source.root or path.parent
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        rows = list(reader)
    needed = [source.image_column] + _target_columns(source, target, classes)
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})"
        )
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    has_split = source.split_column in header
    records, problems = [], []
    seen: dict[Path, int] = {}
    for row_number, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{path}, row {row_number}"
        try:
            image = _existing_path(root, row[source.image_column], where, source.image_column)
            if image in seen:
                raise DataError(f"{where}: image {image} is listed twice (first at row {seen[image]})")
            seen[image] = row_number
            split = _split(row, source.split_column, where) if has_split else None
            record = _record(source, target, classes, row, image, split, root, where, row_number)
            records.append(
                replace(
                    record,
                    group=_optional(row, source.group_column),
                    center=_optional(row, source.center_column),
                )
            )
        except DataError as e:
            problems.extend(e.problems)
    if problems:
        raise DataError(problems)
    return records


def _target_columns(source: ManifestSource, target: TargetKind, classes: list[str]) -> list[str]:
    return {
        "label": [source.label_column],
        "multilabel": list(classes),
        "mask": [source.mask_column],
        "boxes": [source.boxes_column],
        "image": [],
    }[target]


def _record(
    source: ManifestSource,
    target: TargetKind,
    classes: list[str],
    row: dict[str, str],
    image: Path,
    split: str | None,
    root: Path,
    where: str,
    row_number: int,
) -> Record:
    if target == "label":
        return Record(image, split, row_number, label=_class_index(row[source.label_column], classes, where))
    if target == "multilabel":
        return Record(image, split, row_number, labels=tuple(_binary(row[c], where, c) for c in classes))
    if target == "mask":
        return Record(
            image, split, row_number, mask=_existing_path(root, row[source.mask_column], where, "mask")
        )
    if target == "image":
        return Record(image, split, row_number)
    return Record(image, split, row_number, boxes=_boxes(row[source.boxes_column], classes, where))


def _existing_path(root: Path, value: str, where: str, column: str) -> Path:
    if not value.strip():
        raise DataError(f"{where}: column '{column}' is empty")
    p = Path(value.strip())
    p = p if p.is_absolute() else root / p
    if not p.is_file():
        raise DataError(f"{where}: file not found: {p}")
    return p


def _optional(row: dict[str, str], column: str) -> str | None:
    value = (row.get(column) or "").strip()
    return value or None


def _split(row: dict[str, str], column: str, where: str) -> str | None:
    value = row[column].strip().lower()
    if not value:
        return None
    if value not in SPLITS:
        raise DataError(f"{where}: split '{row[column]}' is not one of {', '.join(SPLITS)}")
    return value


def _class_index(value: str, classes: list[str], where: str) -> int:
    name = value.strip()
    if name not in classes:
        raise DataError(f"{where}: label '{name}' is not a declared class ({', '.join(classes)})")
    return classes.index(name)


def _binary(value: str, where: str, column: str) -> float:
    text = value.strip()
    if text in MISSING:
        return math.nan
    if text in ("0", "1", "0.0", "1.0"):
        return float(text)
    raise DataError(f"{where}: column '{column}' must be 1, 0 or empty (missing), got '{text}'")


def _boxes(value: str, classes: list[str], where: str) -> tuple[Box, ...]:
    try:
        items = json.loads(value) if value.strip() else []
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: boxes are not valid JSON ({e.msg})") from None
    if not isinstance(items, list):
        raise DataError(f"{where}: boxes must be a JSON list of [x1, y1, x2, y2, class]")
    boxes = []
    for i, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 5):
            raise DataError(f"{where}: box {i} must be [x1, y1, x2, y2, class], got {item!r}")
        *coords, name = item
        if not all(isinstance(c, int | float) for c in coords):
            raise DataError(f"{where}: box {i} coordinates must be numbers, got {coords!r}")
        x1, y1, x2, y2 = (float(c) for c in coords)
        if not (x2 > x1 and y2 > y1):
            raise DataError(f"{where}: box {i} {coords} needs x2 > x1 and y2 > y1")
        if str(name) not in classes:
            raise DataError(f"{where}: box {i} class '{name}' is not a declared class ({', '.join(classes)})")
        boxes.append(Box(x1, y1, x2, y2, classes.index(str(name))))
    return tuple(boxes)

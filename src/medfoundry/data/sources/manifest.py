"""CSV/TSV manifest source: one row per image, with its label, mask path or boxes.

Columns (names configurable):

- ``image``: image path (PNG, JPEG, TIFF, BMP or DICOM), relative to the manifest's folder
  (or ``root``);
- classification: ``label``, a class name;
- multilabel: one column per class, holding 1, 0, or empty / -1 / NaN for "not labelled";
- segmentation: ``mask``, path of an integer mask (PNG, TIFF, NIfTI) whose pixel value ``i`` is
  ``classes[i]`` (or mapped by ``mask_values``);
- detection: ``boxes``, a JSON list of ``[x1, y1, x2, y2, "class"]`` in pixels of the image
  (an empty list for an image without objects);
- unlabelled data (``image`` target): only the image column;
- optional ``split`` (``train``, ``val`` or ``test``), ``group`` (patient/volume id) and
  ``center`` (acquisition site) columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Literal

from medfoundry.data.masks import MaskValues
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.readers import FileReader
from medfoundry.data.record import DEFAULT_IGNORE_INDEX, Box, Record, TargetKind
from medfoundry.data.sources.base import PredictionReading, SourceBase, SourceScan, make_box
from medfoundry.errors import DataError, number_ranges

__all__ = ["ManifestSource", "read_manifest"]

SPLITS = ("train", "val", "test")
MISSING = {"", "-1", "nan", "NaN", "NA", "na", "none", "None"}


class ManifestSource(SourceBase):
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
        mask_values: Stored mask value -> class name (see ``medfoundry.data.masks``).
    """

    targets = ("label", "multilabel", "mask", "boxes", "image")

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
    mask_values: MaskValues = None

    def infer_classes(self, target: TargetKind) -> list[str]:
        if target not in ("label", "boxes"):
            return super().infer_classes(target)
        header, rows = self._read()
        self._require_columns(header, [self.label_column if target == "label" else self.boxes_column])
        if target == "label":
            return sorted(
                {(row[self.label_column] or "").strip() for row in rows} - {""}
            )  # None: a short row
        names: set[str] = set()
        for row in rows:
            try:
                items = json.loads(row[self.boxes_column] or "[]")
                names.update(str(item[4]) for item in items if isinstance(item, list) and len(item) == 5)
            except json.JSONDecodeError:
                continue  # reported with its row by scan
        return sorted(names)

    def prediction_reading(self) -> PredictionReading:
        """2D images: new volumes are read as stored, in axial slices."""
        return PredictionReading()

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        header, rows = self._read()
        needed = [self.image_column] + {
            "label": [self.label_column],
            "multilabel": list(classes),
            "mask": [self.mask_column],
            "boxes": [self.boxes_column],
            "image": [],
        }[target]
        self._require_columns(header, needed)
        reader = FileReader(preprocessing.intensity, self._mask_mapping(classes, ignore_index))
        root = self.root or self.path.parent
        has_split = self.split_column in header
        records = []
        problems: dict[str, list[int]] = {}  # a problem -> the rows that have it
        seen: dict[Path, int] = {}
        for number, row in enumerate(rows, start=2):  # row 1 is the header
            where = f"{self.path}, row {number}"
            try:
                image = _existing_path(root, row[self.image_column], where, self.image_column)
                if image in seen:
                    raise DataError(f"{where}: image {image} is listed twice (first at row {seen[image]})")
                seen[image] = number
                records.append(
                    Record(
                        image,
                        _split(row, self.split_column, where) if has_split else None,
                        number,
                        group=_optional(row, self.group_column),
                        center=_optional(row, self.center_column),
                        reader=reader,
                        **self._target(target, classes, row, root, where),
                    )
                )
            except DataError as e:
                for problem in e.problems:
                    numbers = problems.setdefault(problem.removeprefix(f"{where}: "), [])
                    numbers += [number] if problem.startswith(f"{where}: ") else []
        return SourceScan(records, [self._rows_line(text, numbers) for text, numbers in problems.items()])

    def _rows_line(self, problem: str, numbers: list[int]) -> str:
        """One line per problem, naming every row that has it (``rows 3-5, 9: ...``)."""
        if not numbers:
            return problem
        rows = f"row {numbers[0]}" if len(numbers) == 1 else f"rows {number_ranges(numbers)}"
        return f"{self.path}, {rows}: {problem}"

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self.path.is_file():
            raise DataError(f"{self.path}: manifest file not found")
        raw = self.path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise DataError(
                f"{self.path}, row {line}: not UTF-8 text (byte {raw[e.start : e.start + 1]!r}); "
                "save the manifest as UTF-8"
            ) from None
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            rows = list(reader)
        except csv.Error as e:
            raise DataError(f"{self.path}, row {reader.line_num}: not a readable CSV row ({e})") from None
        header = list(reader.fieldnames or [])
        if not rows:
            raise DataError(f"{self.path}: the manifest has no rows")
        return header, rows

    def _require_columns(self, header: list[str], needed: list[str]) -> None:
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(
                f"{self.path}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})"
            )

    def _target(
        self, target: TargetKind, classes: list[str], row: dict[str, str], root: Path, where: str
    ) -> dict[str, Any]:
        if target == "label":
            return {"label": _class_index(row[self.label_column], classes, where)}
        if target == "multilabel":
            return {"labels": tuple(_binary(row[c], where, c) for c in classes)}
        if target == "mask":
            return {"mask": _existing_path(root, row[self.mask_column], where, self.mask_column)}
        if target == "boxes":
            return {"boxes": _boxes(row[self.boxes_column], classes, where)}
        return {}


def read_manifest(source: ManifestSource, target: TargetKind, classes: list[str]) -> list[Record]:
    """Parse a manifest into records (default preprocessing), checking every row.

    Raises:
        DataError: listing every bad row (file, row number, column, what is wrong).
    """
    scan = source.scan(
        target, classes=classes, preprocessing=Preprocessing(), ignore_index=DEFAULT_IGNORE_INDEX
    )
    if scan.problems:
        raise DataError(scan.problems)
    return scan.records


def _existing_path(root: Path, value: str | None, where: str, column: str) -> Path:
    if not (value or "").strip():
        raise DataError(f"{where}: column '{column}' is empty")
    p = Path((value or "").strip())
    p = p if p.is_absolute() else root / p
    if not p.is_file():
        raise DataError(f"{where}: file not found: {p}")
    return p


def _optional(row: dict[str, str], column: str) -> str | None:
    value = (row.get(column) or "").strip()
    return value or None


def _split(row: dict[str, str], column: str, where: str) -> str | None:
    value = (row[column] or "").strip().lower()
    if not value:
        return None
    if value not in SPLITS:
        raise DataError(f"{where}: split '{row[column]}' is not one of {', '.join(SPLITS)}")
    return value


def _class_index(value: str, classes: list[str], where: str) -> int:
    name = (value or "").strip()
    if not name:
        raise DataError(f"{where}: the label is empty (every row needs one of {', '.join(classes)})")
    if name not in classes:
        raise DataError(f"{where}: label '{name}' is not a declared class ({', '.join(classes)})")
    return classes.index(name)


def _binary(value: str, where: str, column: str) -> float:
    text = (value or "").strip()
    if text in MISSING:
        return math.nan
    if text in ("0", "1", "0.0", "1.0"):
        return float(text)
    raise DataError(f"{where}: column '{column}' must be 1, 0 or empty (missing), got '{text}'")


def _boxes(value: str, classes: list[str], where: str) -> tuple[Box, ...]:
    try:
        items = json.loads(value) if (value or "").strip() else []
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
        boxes.append(make_box(coords, str(name), classes, where=f"{where}: box {i}"))
    return tuple(boxes)

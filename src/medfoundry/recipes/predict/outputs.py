"""What ``medfoundry predict`` writes, one writer per form of prediction.

The task turns its head's outputs into predictions (``TaskType.predict``); the form it returns
(``medfoundry.tasks.predictions``) picks the writer, so a new task type that predicts one of
these forms needs nothing here:

- class probabilities (classification, multilabel): ``predictions.csv``, one row per image
  (or slice, or frame): ``id``, ``predicted`` (the predicted classes, joined by ``|``: the top
  class for classification, every class at probability >= 0.5 for multilabel) and
  ``probability/<class>`` for every class (softmax for classification, sigmoid for multilabel);
- per-pixel classes (segmentation): ``masks/<id>.png`` per 2D image (pixel value = class index,
  ``#`` in ids becomes ``_``), and for a volume one label volume ``volumes/<name>.nii.gz`` on
  the input's own voxel grid (shape, affine, orientation); ``masks.csv`` lists ``id`` -> file.
  Every file lies inside the output folder (an id's ``..`` parts, e.g. of a manifest row
  ``../images/a.png``, are left out) and no two samples share one (``head.nii`` and
  ``head.nii.gz`` give ``head.nii.gz`` and ``head-2.nii.gz``);
- scored boxes (detection): ``detections.json`` in COCO format (``images`` with their size,
  ``categories``, ``annotations`` with ``bbox`` [x, y, w, h] in pixels of the image and ``score``).
  Boxes of zero width or height are not objects and are left out; a warning says how many (a
  head whose box regression outputs zero everywhere never learnt to draw boxes).

Every prediction is brought back onto the image's own grid (``medfoundry.data.fit_inverse``):
the decoded image's size, or for volume slices the slice's size before any in-plane resampling.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image

from medfoundry.data.fit_inverse import Geometry, restore_boxes, restore_logits
from medfoundry.data.label_volumes import label_dtype, plane_shape, put_slice, write_label_volume
from medfoundry.data.record import Record
from medfoundry.data.sources.base import file_stem
from medfoundry.data.volumes import VolumeSliceReader
from medfoundry.tasks import BoxPredictions, ClassPredictions, PixelPredictions, Predictions, TaskType

__all__ = ["PredictedBatch", "PredictionWriter", "TaskPredictionWriter", "prediction_writer"]

Form = TypeVar("Form", ClassPredictions, PixelPredictions, BoxPredictions)

log = logging.getLogger(__name__)


@dataclass
class PredictedBatch:
    """A batch's model outputs and how each of its samples was fitted.

    Attributes:
        records: The samples.
        ids: Their ids.
        outputs: The task head's output for the batch.
        geometry: Each sample's fit (``fit_to_size``'s scales and offsets).
        decoded_hw: Each sample's decoded ``(H, W)``.
    """

    records: list[Record]
    ids: list[str]
    outputs: Any
    geometry: list[Geometry]
    decoded_hw: list[tuple[int, int]]

    def output_hw(self, i: int) -> tuple[int, int]:
        """The grid sample ``i``'s prediction goes back to: a volume slice's stored size, else
        the decoded image's."""
        record = self.records[i]
        if isinstance(record.reader, VolumeSliceReader):
            return plane_shape(record.reader.volume(record.image).data.shape, record.reader.axis)
        return self.decoded_hw[i]


class PredictionWriter(Protocol):
    """Collects a task's predictions and writes its files."""

    def add(self, batch: PredictedBatch) -> None:
        """Take one batch (files may be written at once)."""

    def finish(self) -> list[str]:
        """Write what remains; return the files written, relative to the output folder."""


class FormWriter(Protocol):
    """Writes one form of prediction (see the module docstring)."""

    def add(self, batch: PredictedBatch, predictions: Predictions) -> None:
        """Take one batch's predictions (files may be written at once)."""

    def finish(self) -> list[str]:
        """Write what remains; return the files written, relative to the output folder."""


def prediction_writer(
    task: TaskType, folder: Path, records: Sequence[Record], *, image_size: int
) -> PredictionWriter:
    """The writer of ``task``'s predictions into ``folder`` (``image_size``: the model's input side)."""
    return TaskPredictionWriter(task, folder, records, image_size=image_size)


class TaskPredictionWriter:
    """Asks the task for each batch's predictions (``TaskType.predict``) and writes them with the
    writer of their form, chosen at the first batch.

    Args:
        task: The task whose head made the outputs.
        folder: The output folder.
        records: Every sample that will be added (volumes are written once all their slices are in).
        image_size: The model's input side.
    """

    def __init__(self, task: TaskType, folder: Path, records: Sequence[Record], *, image_size: int) -> None:
        self.task, self.folder, self.records, self.image_size = task, folder, records, image_size
        self.writer: FormWriter | None = None

    def add(self, batch: PredictedBatch) -> None:
        predictions = self.task.predict(batch.outputs, image_size=(self.image_size, self.image_size))
        if self.writer is None:
            self.writer = _form_writer(predictions, self.folder, list(self.task.spec.classes), self.records)
        self.writer.add(batch, predictions)

    def finish(self) -> list[str]:
        return self.writer.finish() if self.writer is not None else []


def _form_writer(
    predictions: Predictions, folder: Path, classes: list[str], records: Sequence[Record]
) -> FormWriter:
    if isinstance(predictions, ClassPredictions):
        return ProbabilityWriter(folder, classes)
    if isinstance(predictions, PixelPredictions):
        return MaskWriter(folder, classes, records)
    return DetectionWriter(folder, classes)


def _expect(predictions: Predictions, form: type[Form]) -> Form:
    """``predictions``, checked to be of the form its writer writes."""
    if not isinstance(predictions, form):
        raise TypeError(f"a task predicted {type(predictions).__name__} after {form.__name__} in one run")
    return predictions


class ProbabilityWriter:
    """``predictions.csv``: every class's probability per sample."""

    def __init__(self, folder: Path, classes: list[str]) -> None:
        self.folder, self.classes = folder, classes
        self.rows: list[dict[str, str]] = []

    def add(self, batch: PredictedBatch, predictions: Predictions) -> None:
        found = _expect(predictions, ClassPredictions)
        probabilities = found.probabilities.cpu().numpy()
        for sample_id, p, chosen in zip(batch.ids, probabilities, found.predicted, strict=True):
            predicted = "|".join(self.classes[i] for i in chosen)
            row = {"id": sample_id, "predicted": predicted}
            row.update({f"probability/{c}": f"{value:.6g}" for c, value in zip(self.classes, p, strict=True)})
            self.rows.append(row)

    def finish(self) -> list[str]:
        columns = ["id", "predicted", *(f"probability/{c}" for c in self.classes)]
        _write_csv(self.folder / "predictions.csv", columns, self.rows)
        return ["predictions.csv"]


class MaskWriter:
    """A PNG mask per 2D image; a NIfTI label volume per volume (filled slice by slice)."""

    def __init__(self, folder: Path, classes: list[str], records: Sequence[Record]) -> None:
        self.folder, self.classes = folder, classes
        self.dtype = label_dtype(len(classes))
        self.rows: list[dict[str, str]] = []
        # slices still missing per volume: a volume is written (and freed) once it is complete
        self.missing = Counter(r.image for r in records if isinstance(r.reader, VolumeSliceReader))
        self.volumes: dict[Path, np.ndarray] = {}
        self.names = FileNames()

    def add(self, batch: PredictedBatch, predictions: Predictions) -> None:
        class_scores = _expect(predictions, PixelPredictions).class_scores
        for i, (record, sample_id) in enumerate(zip(batch.records, batch.ids, strict=True)):
            logits, seen = restore_logits(
                class_scores[i], batch.geometry[i], batch.decoded_hw[i], output_hw=batch.output_hw(i)
            )
            labels = logits.argmax(dim=0)
            labels[~seen] = 0  # the model never saw these pixels (a center crop): background
            mask = labels.cpu().numpy().astype(self.dtype)
            if isinstance(record.reader, VolumeSliceReader):
                self._add_slice(record, record.reader, sample_id, mask)
            else:
                name = self.names.new(f"masks/{inside(sample_id.replace('#', '_'))}", ".png")
                (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(self.folder / name)
                self.rows.append({"id": sample_id, "mask": name})

    def _add_slice(self, record: Record, reader: VolumeSliceReader, sample_id: str, mask: np.ndarray) -> None:
        volume = reader.volume(record.image)
        labels = self.volumes.setdefault(record.image, np.zeros(volume.data.shape[:3], self.dtype))
        assert record.frame is not None, "volume records always carry their slice index"
        put_slice(labels, mask, reader.axis, index=record.frame)
        self.missing[record.image] -= 1
        if self.missing[record.image] == 0:
            volume_id = sample_id.split("#")[0]
            stem = PurePosixPath("volumes", inside(volume_id)).parent / file_stem(Path(volume_id))
            name = self.names.new(stem.as_posix(), ".nii.gz")
            write_label_volume(self.folder / name, self.volumes.pop(record.image), volume)
            self.rows.append({"id": volume_id, "mask": name})

    def finish(self) -> list[str]:
        _write_csv(self.folder / "masks.csv", ["id", "mask"], self.rows)
        return ["masks.csv", *(row["mask"] for row in self.rows)]


def inside(sample_id: str) -> str:
    """``sample_id`` as a relative path that stays inside a folder: its root, ``.`` and ``..``
    parts left out.

    Examples:
        >>> inside("../../imgs/a.png"), inside("/data/b.png"), inside("c/./d.png")
        ('imgs/a.png', 'data/b.png', 'c/d.png')
    """
    parts = PurePosixPath(sample_id.replace("\\", "/")).parts
    return "/".join(p for p in parts if p not in ("/", ".", ".."))


class FileNames:
    """Output file names, each given once: a name already given (in any letter case) gets
    ``-2``, ``-3``, ... before its suffix.

    Examples:
        >>> names = FileNames()
        >>> names.new("volumes/head", ".nii.gz"), names.new("volumes/head", ".nii.gz")
        ('volumes/head.nii.gz', 'volumes/head-2.nii.gz')
    """

    def __init__(self) -> None:
        self.given: set[str] = set()

    def new(self, stem: str, suffix: str) -> str:
        name, n = f"{stem}{suffix}", 1
        while name.lower() in self.given:
            n += 1
            name = f"{stem}-{n}{suffix}"
        self.given.add(name.lower())
        return name


class DetectionWriter:
    """``detections.json``: COCO images, categories and scored annotations."""

    def __init__(self, folder: Path, classes: list[str]) -> None:
        self.folder = folder
        self.empty_boxes = 0
        self.coco: dict[str, list[dict[str, Any]]] = {
            "images": [],
            "annotations": [],
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
        }

    def add(self, batch: PredictedBatch, predictions: Predictions) -> None:
        for i, found in enumerate(_expect(predictions, BoxPredictions).detections):
            height, width = batch.output_hw(i)
            image_id = len(self.coco["images"]) + 1
            self.coco["images"].append(
                {"id": image_id, "file_name": batch.ids[i], "height": height, "width": width}
            )
            boxes = restore_boxes(
                found["boxes"].cpu().numpy(),
                batch.geometry[i],
                batch.decoded_hw[i],
                output_hw=(height, width),
            )
            scores, labels = found["scores"].cpu().tolist(), found["labels"].cpu().tolist()
            for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores, labels, strict=True):
                if x2 <= x1 or y2 <= y1:
                    self.empty_boxes += 1
                    continue
                self.coco["annotations"].append(
                    {
                        "id": len(self.coco["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": int(label) + 1,
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "area": round((x2 - x1) * (y2 - y1), 2),
                        "score": round(float(score), 5),
                        "iscrowd": 0,
                    }
                )

    def finish(self) -> list[str]:
        if self.empty_boxes:
            kept = len(self.coco["annotations"])
            log.warning(
                "%d detections of zero width or height were left out (%d kept): a head whose boxes "
                "all have zero size has not learnt to regress boxes",
                self.empty_boxes,
                kept,
            )
        (self.folder / "detections.json").write_text(json.dumps(self.coco, indent=1))
        return ["detections.json"]


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

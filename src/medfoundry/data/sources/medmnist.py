"""MedMNIST source: a MedMNIST ``.npz`` file (v2 / MedMNIST+ layout, any of the 2D datasets).

The file holds ``{train,val,test}_images`` (``(N, H, W)`` gray or ``(N, H, W, 3)`` RGB, uint8)
and ``{train,val,test}_labels`` (``(N, 1)`` class indices, or ``(N, C)`` 0/1 for multi-label
ChestMNIST). The given splits are kept. Classes not declared by the task are named by their
index (``"0"``, ``"1"``, ...); declare the names from MedMNIST's ``INFO`` for readable reports.
3D datasets (``(N, D, H, W)``, e.g. OrganMNIST3D) are not 2D samples and are rejected.

Images are read from the archive member by member: arrays up to ``LOAD_WHOLE_BYTES`` are loaded
once; larger ones (MedMNIST+ at 224 px reaches tens of GB) are streamed in order, which is how
the cache reads them.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from medfoundry.data.intensity import RangeIntensity, scale_to_unit
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Pixels, Record, TargetKind
from medfoundry.data.sources.base import PredictionReading, SourceBase, SourceScan
from medfoundry.errors import DataError

__all__ = ["MedMNISTSource", "NpzImageReader"]

SPLITS = ("train", "val", "test")
LOAD_WHOLE_BYTES = 512 * 2**20


class MedMNISTSource(SourceBase):
    """A MedMNIST ``.npz`` file.

    Args:
        path: The ``.npz`` file (e.g. ``pathmnist.npz`` or ``chestmnist_224.npz``).
    """

    targets = ("label", "multilabel", "image")

    type: Literal["medmnist"]
    path: Path

    def infer_classes(self, target: TargetKind) -> list[str]:
        if target == "image":
            return []
        labels = [self._labels(split) for split in SPLITS if f"{split}_labels.npy" in self._members()]
        if not labels:
            raise DataError(f"{self.path}: no *_labels arrays")
        count = (
            labels[0].shape[1] if target == "multilabel" else int(max(a.max() for a in labels if a.size)) + 1
        )
        return [str(i) for i in range(count)]

    def prediction_reading(self) -> PredictionReading:
        """2D images: new volumes are read as stored, in axial slices."""
        return PredictionReading()

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        members = self._members()
        splits = [s for s in SPLITS if f"{s}_images.npy" in members]
        if not splits:
            raise DataError(
                f"{self.path}: no train_images / val_images / test_images arrays (found: {sorted(members)})"
            )
        records: list[Record] = []
        for split in splits:
            shape, _ = _npy_header(self.path, f"{split}_images")
            if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
                raise DataError(
                    f"{self.path}: {split}_images has shape {shape}; expected (N, H, W) or (N, H, W, 3) "
                    "(3D MedMNIST datasets are not supported)"
                )
            targets = (
                self._targets(split, shape[0], target, classes) if target != "image" else [{}] * shape[0]
            )
            reader = NpzImageReader(f"{split}_images", preprocessing.intensity)
            records += [
                Record(self.path, split, i, frame=i, member=reader.key, reader=reader, **t)
                for i, t in enumerate(targets)
            ]
        return SourceScan(records)

    def _members(self) -> set[str]:
        if not self.path.is_file():
            raise DataError(f"{self.path}: MedMNIST file not found")
        try:
            with zipfile.ZipFile(self.path) as archive:
                return set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{self.path}: not a readable .npz archive ({e})") from None

    def _labels(self, split: str) -> np.ndarray:
        with np.load(self.path) as data:
            labels = np.asarray(data[f"{split}_labels"])
        return labels.reshape(len(labels), -1)

    def _targets(self, split: str, n: int, target: TargetKind, classes: list[str]) -> list[dict[str, Any]]:
        if f"{split}_labels.npy" not in self._members():
            raise DataError(f"{self.path}: {split}_images has no {split}_labels")
        labels = self._labels(split)
        where = f"{self.path}: {split}_labels"
        if len(labels) != n:
            raise DataError(f"{where} has {len(labels)} rows for {n} images")
        if target == "label":
            if labels.shape[1] != 1:
                raise DataError(
                    f"{where} has {labels.shape[1]} columns: a multilabel dataset (use type multilabel)"
                )
            if labels.min() < 0 or labels.max() >= len(classes):
                raise DataError(
                    f"{where} holds values {int(labels.min())}..{int(labels.max())}, but "
                    f"{len(classes)} classes are declared"
                )
            return [{"label": int(v)} for v in labels[:, 0]]
        if labels.shape[1] != len(classes) or not np.isin(labels, (0, 1)).all():
            raise DataError(
                f"{where} has shape {labels.shape} with values {np.unique(labels)[:5].tolist()}; "
                f"a multilabel task with {len(classes)} classes needs (N, {len(classes)}) of 0/1"
            )
        return [{"labels": tuple(float(v) for v in row)} for row in labels]


@dataclass(eq=False)
class NpzImageReader:
    """Reads item ``record.frame`` of the array ``key`` in ``record.image`` (an ``.npz``).

    Args:
        key: Array name without ``.npy`` (e.g. ``train_images``).
        intensity: The task's intensity (``auto`` is the dtype range).
    """

    key: str
    intensity: Any
    _whole: np.ndarray | None = field(default=None, init=False, repr=False)
    # (open member, index of the next item, dtype, item shape)
    _stream: tuple[IO[bytes], int, np.dtype[Any], tuple[int, ...]] | None = field(
        default=None, init=False, repr=False
    )

    def read(self, record: Record) -> Pixels:
        assert record.frame is not None, "MedMNIST records carry their array index"
        item = self._item(record.image, record.frame)
        intensity = RangeIntensity() if self.intensity.type == "auto" else self.intensity
        return Pixels(scale_to_unit(item, intensity, where=f"{record.image} [{self.key} {record.frame}]"))

    def cache_key(self, signature: Callable[[Path], str]) -> str:
        return repr((self.key, self.intensity))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_whole": None, "_stream": None}

    def _item(self, path: Path, index: int) -> np.ndarray:
        if self._whole is None and self._stream is None:
            shape, dtype = _npy_header(path, self.key)
            if int(np.prod(shape)) * dtype.itemsize <= LOAD_WHOLE_BYTES:
                with np.load(path) as data:
                    self._whole = np.asarray(data[self.key])
        if self._whole is not None:
            return np.asarray(self._whole[index])
        return self._streamed(path, index)

    def _streamed(self, path: Path, index: int) -> np.ndarray:
        if self._stream is None or self._stream[1] > index:  # going back means reading from the start
            member = zipfile.ZipFile(path).open(f"{self.key}.npy")
            shape, dtype = _read_npy_header(member, f"{path} [{self.key}]")
            self._stream = (member, 0, dtype, shape[1:])
        member, position, dtype, item_shape = self._stream
        size = int(np.prod(item_shape)) * dtype.itemsize
        member.seek(size * (index - position), 1)
        item = np.frombuffer(member.read(size), dtype=dtype).reshape(item_shape)
        self._stream = (member, index + 1, dtype, item_shape)
        return item


def _npy_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype of an array in an ``.npz`` without decompressing it."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        return _read_npy_header(member, f"{path} [{key}]")


def _read_npy_header(member: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(member)
    if fortran_order:
        raise DataError(
            f"{where}: Fortran-ordered arrays are not supported; save with numpy's default (C) order"
        )
    return tuple(shape), np.dtype(dtype)

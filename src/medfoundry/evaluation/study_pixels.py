"""A study task's pixels, decoded and fitted once per input size, then read from the cache.

Every cell of a task (probes, fine-tuning, frozen decoders, for every fraction and seed) reads
the same images. Decoding them on every access is slow for large files and very slow for
volumes: fine-tuning visits slices in random order, and each slice of another volume would
load that whole volume again. ``StudyPixels`` builds the data layer's memory-mapped cache
(``prepare_arrays``: the task's preprocessing, checked masks and boxes) over all of the task's
records at an encoder's input size, the first time a cell needs it, and hands out views of it
for any subset of those records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfoundry.data.cache import CacheSettings, PreparedSplit, SampleArrays, prepare_arrays
from medfoundry.data.record import Record, ignore_index_or_default
from medfoundry.evaluation.study_data import StudyTaskData

__all__ = ["StudyPixels"]


class StudyPixels:
    """Cached pixels of one study task's records, by input size.

    Args:
        data: The task's data (its records, spec and task).
        folder: Cache folder (e.g. ``STUDY/pixels``); ``None`` keeps the arrays in memory.
        num_workers: Processes that decode while a cache is built.
    """

    def __init__(self, data: StudyTaskData, folder: Path | None, num_workers: int = 0) -> None:
        self.data = data
        self.cache = CacheSettings(folder=folder, num_workers=num_workers)
        self._prepared: dict[int, tuple[PreparedSplit, dict[tuple[Path, str | None, int | None], int]]] = {}

    def arrays(self, records: Sequence[Record], size: int) -> SampleArrays:
        """The cached samples of ``records`` (any of the task's records, any order) at ``size``.

        Raises:
            DataError: a sample of the task cannot be decoded or fails its checks (nothing cached).
        """
        prepared, positions = self._at(size)
        rows = np.asarray([prepared.arrays.rows[positions[r.key]] for r in records], dtype=np.int64)
        folder = prepared.arrays.folder
        return SampleArrays(folder, None if folder is not None else prepared.arrays.arrays, rows)

    def _at(self, size: int) -> tuple[PreparedSplit, dict[tuple[Path, str | None, int | None], int]]:
        if size not in self._prepared:
            spec, task = self.data.spec, self.data.task
            ignore = task.ignore_index
            prepared = prepare_arrays(
                f"{spec.name}-{size}px",
                self.data.records,
                task.target,
                size=size,
                preprocessing=spec.preprocessing,
                num_classes=len(spec.classes),
                ignore_index=ignore_index_or_default(ignore),
                cache=self.cache,
            )
            positions = {r.key: i for i, r in enumerate(prepared.records)}
            self._prepared[size] = (prepared, positions)
        return self._prepared[size]

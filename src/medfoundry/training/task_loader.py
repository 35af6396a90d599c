"""An endless, deterministic, resumable stream of batches of one task.

The order of batches depends only on (seed, task, batches consumed so far): pass ``p`` over the
dataset uses a permutation drawn from ``(seed, task key, p)``, and each sample's augmentation
seed from ``(seed, task key, p, position)``. Resuming at ``start_batch`` therefore yields exactly
the batches an uninterrupted run would have seen, with any number of worker processes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from medfoundry.data.task_dataset import TaskDataset
from medfoundry.training.task_batch import TaskBatch, TaskCollate

__all__ = ["CyclicTaskLoader", "task_key"]


def task_key(name: str) -> int:
    """A stable integer per task name (so adding a task does not reshuffle the others)."""
    return zlib.crc32(name.encode())


class CyclicBatchSampler:
    """Yields lists of ``(index, augmentation seed)`` forever, starting at ``start_batch``."""

    def __init__(self, n: int, batch_size: int, seed: int, key: int, start_batch: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.key = n, batch_size, seed, key
        self.batches_per_pass = -(-n // batch_size)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.start_batch
        while True:
            pass_index, position = divmod(batch, self.batches_per_pass)
            order = np.random.default_rng([self.seed, self.key, pass_index]).permutation(self.n)
            start = position * self.batch_size
            indices = order[start : start + self.batch_size]
            seeds = np.random.default_rng([self.seed, self.key, pass_index, position]).integers(
                0, 2**31, size=len(indices)
            )
            yield [(int(i), int(s)) for i, s in zip(indices, seeds, strict=True)]
            batch += 1


class CyclicTaskLoader:
    """Round-robin source of one task's batches; restarts its dataset whenever it runs out.

    Args:
        name: Task name.
        dataset: The task's training dataset.
        collate: Makes a ``TaskBatch`` from samples.
        batch_size: Images per batch (the last batch of a pass may be smaller).
        seed: Run seed.
        num_workers: DataLoader worker processes (0: decode in the main process).
        start_batch: Batches already consumed (when resuming).
        pin_memory: Pin batches for faster host-to-GPU copies.
    """

    def __init__(
        self,
        name: str,
        dataset: TaskDataset,
        collate: TaskCollate,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        start_batch: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.name = name
        self.sampler = CyclicBatchSampler(len(dataset), batch_size, seed, task_key(name), start_batch)
        self.consumed = start_batch
        self._loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # a private generator: creating iterators must not draw from the global RNG stream
            generator=torch.Generator().manual_seed(seed),
        )
        self._iterator: Iterator[TaskBatch] | None = None

    @property
    def batches_per_pass(self) -> int:
        return self.sampler.batches_per_pass

    def next_batch(self) -> TaskBatch:
        if self._iterator is None:
            self._iterator = iter(self._loader)
        batch = next(self._iterator)
        self.consumed += 1
        return batch

    def close(self) -> None:
        """Stop worker processes."""
        self._iterator = None

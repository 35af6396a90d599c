"""An endless, deterministic, resumable stream of batches of one task.

The samples of a task form one continuous stream: pass ``p`` over the dataset is a permutation
drawn from ``(seed, task key, p)``, and pass after pass follow each other, so every batch is
full (a batch may span the end of one pass and the start of the next). Each sample's
augmentation seed is drawn from ``(seed, task key, p)`` too, per position. The stream depends
only on (seed, task, batches consumed), so resuming at ``start_batch`` yields exactly the
batches an uninterrupted run would have seen, with any number of worker processes; with
``world_size`` processes, rank ``r`` takes the ``r``-th equal slice of every global batch.
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
    """Yields lists of ``(index, augmentation seed)`` forever, starting at ``start_batch``.

    Args:
        n: Dataset size.
        batch_size: Global batch size (all processes together).
        seed: Run seed.
        key: Task key (``task_key(name)``).
        start_batch: Global batches already consumed.
        rank: This process's rank.
        world_size: Number of processes; must divide ``batch_size``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        *,
        key: int,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.n, self.batch_size, self.seed, self.key = n, batch_size, seed, key
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size
        self.batches_per_pass = -(-n // batch_size)
        self._passes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        shard = self.batch_size // self.world_size
        batch = self.start_batch
        while True:
            first = batch * self.batch_size + self.rank * shard
            yield [self._sample(position) for position in range(first, first + shard)]
            batch += 1

    def _sample(self, position: int) -> tuple[int, int]:
        pass_index, offset = divmod(position, self.n)
        if pass_index not in self._passes:
            # keep only the current pass: the stream only moves forward
            rng = np.random.default_rng([self.seed, self.key, pass_index])
            self._passes = {pass_index: (rng.permutation(self.n), rng.integers(0, 2**31, size=self.n))}
        order, seeds = self._passes[pass_index]
        return int(order[offset]), int(seeds[offset])


class CyclicTaskLoader:
    """Round-robin source of one task's batches; restarts its dataset whenever it runs out.

    Args:
        name: Task name.
        dataset: The task's training dataset.
        collate: Makes a ``TaskBatch`` from samples.
        batch_size: Images per global batch (all processes together).
        seed: Run seed.
        num_workers: DataLoader worker processes (0: decode in the main process).
        start_batch: Batches already consumed (when resuming).
        pin_memory: Pin batches for faster host-to-GPU copies.
        rank: This process's rank (multi-process training).
        world_size: Number of processes; each loads ``batch_size / world_size`` images.
    """

    def __init__(
        self,
        name: str,
        dataset: TaskDataset,
        collate: TaskCollate,
        *,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        start_batch: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.name = name
        self.sampler = CyclicBatchSampler(
            len(dataset),
            batch_size,
            seed,
            key=task_key(name),
            start_batch=start_batch,
            rank=rank,
            world_size=world_size,
        )
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

"""Cyclic round-robin over tasks: every shared update sees every task equally often.

One *round* is one batch of each task, in a fixed order. An *epoch* is as many rounds as the
largest task has batches, so small tasks' loaders restart until the largest one has been seen
once; every update sees every task regardless of dataset size [0].

[0] Schäfer et al., Nature Computational Science 4, 495-509 (2024).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from medfoundry.training.task_batch import TaskBatch
from medfoundry.training.task_loader import CyclicTaskLoader

__all__ = ["RoundRobinSampler"]


class RoundRobinSampler:
    """Hands out the batches of one shared step: ``rounds_per_step`` rounds of all tasks.

    Args:
        loaders: Task name -> its loader, in round order.
        rounds_per_step: Rounds per shared optimiser step.
    """

    def __init__(self, loaders: Mapping[str, CyclicTaskLoader], rounds_per_step: int = 1) -> None:
        self.loaders = dict(loaders)
        self.rounds_per_step = rounds_per_step
        self.rounds_per_epoch = max(loader.batches_per_pass for loader in self.loaders.values())

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.rounds_per_epoch // self.rounds_per_step)

    def next_step(self) -> Iterator[TaskBatch]:
        """The step's batches, fetched lazily: only one task's batch is held at a time."""
        for _ in range(self.rounds_per_step):
            for loader in self.loaders.values():
                yield loader.next_batch()

    def state(self) -> dict[str, int]:
        """Batches consumed per task; enough to resume every loader exactly."""
        return {name: loader.consumed for name, loader in self.loaders.items()}

    def close(self) -> None:
        for loader in self.loaders.values():
            loader.close()

"""Per-task validation: mean normalised loss and the task's metrics over a whole split."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

import torch

from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.tasks.task_type import TaskMetrics, TaskType
from medfoundry.training.task_batch import TaskBatch

__all__ = ["validate"]


@torch.no_grad()
def validate(
    model: MultiTaskModel,
    tasks: Mapping[str, TaskType],
    loaders: Mapping[str, Iterable[TaskBatch]],
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    accumulators: dict[str, TaskMetrics] | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate every task on its loader.

    Args:
        accumulators: When given, filled with each task's metric accumulator (which keeps the
            per-item results, ``TaskMetrics.items``).

    Returns:
        Task -> ``{"loss": mean normalised loss per image, <metric>: value, ...}``.
    """
    was_training = model.training
    model.eval()
    results = {}
    for name, loader in loaders.items():
        metrics = tasks[name].metrics()
        total, count = 0.0, 0
        for batch in loader:
            batch = batch.to(device)
            amp = (
                torch.autocast(device_type=device.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with amp:
                outputs = model(name, batch.images)
                loss = tasks[name].loss(outputs, batch.targets)
            total += loss.item() * len(batch)
            count += len(batch)
            metrics.update(outputs, batch.targets)
        results[name] = {"loss": total / max(count, 1), **metrics.compute()}
        if accumulators is not None:
            accumulators[name] = metrics
    model.train(was_training)
    return results

"""What every task type provides.

A task type is one module in ``medfoundry.tasks`` with one class implementing ``TaskType``:
the head it puts on a shared feature, its loss normalised so that chance level is about 1
(so that no task dominates the shared gradient without tuned weights), its metrics and how it
collates targets. Adding a task type is one module, one ``register`` line and one test file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch
from torch import nn

from medfoundry.data.record import TargetKind
from medfoundry.tasks.spec import TaskSpec

__all__ = ["FeatureKind", "TaskMetrics", "TaskType", "TaskTypeClass"]

FeatureKind = Literal["pooled", "pixel", "pyramid", "masked"]
"""The shared feature a head consumes: the pooled deepest map ``(B, C)``, the pixel decoder's
per-pixel embedding ``(B, E, H, W)``, the detection decoder's per-level tower outputs, or the
output of the shared masked-image objective, which masks the images at the encoder's input and
so runs the encoder itself."""


class TaskMetrics(Protocol):
    """Accumulates predictions over a split and computes the task's metrics.

    Besides the values, it keeps what it saw per test item (``items``), compactly, so that a
    study can store it and score any resample of the test items later (``score_items``):
    bootstrap intervals and paired comparisons of two models on the same items.
    """

    def update(self, outputs: Any, targets: Any) -> None:
        """Add one batch (model outputs and collated targets)."""

    def compute(self) -> dict[str, float]:
        """Metric name -> value over everything added (NaN when undefined)."""

    def items(self) -> dict[str, np.ndarray]:
        """Named arrays describing everything added, item by item (``N`` items along the axis
        that ``score_items`` weights; ``{}`` for a task without metrics)."""

    def score_items(self, items: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric of ``items`` under each row of ``weights`` ``(B, N)`` (how often each
        item counts): name -> ``(B,)``. A row of ones gives ``compute()``'s values."""

    def chance(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        """Metric name -> what a prediction that ignores the image scores on these items (only
        metrics with a meaningful chance level)."""


class TaskType(Protocol):
    """One task, bound to its spec.

    Attributes:
        feature: Which shared feature the head reads.
        target: What the task needs from each sample (see ``medfoundry.data.record``).
        spec: The task's spec.
    """

    feature: ClassVar[FeatureKind]
    target: ClassVar[TargetKind]
    spec: TaskSpec

    def __init__(self, spec: TaskSpec) -> None:
        """Bind the task to its spec and validate the spec's ``options``."""

    def build_head(self, in_channels: int) -> nn.Module:
        """The task's own layers on top of the shared feature (``in_channels`` wide)."""

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """Scalar loss, normalised so that chance-level predictions give about 1."""

    def metrics(self) -> TaskMetrics:
        """A fresh metric accumulator."""

    def collate_targets(self, targets: Sequence[Any]) -> Any:
        """Batch the per-sample targets that the dataset produced."""


TaskTypeClass = type[TaskType]
"""A task-type class: called with a spec, it returns the task; ``feature`` and ``target`` are
readable on the class itself."""

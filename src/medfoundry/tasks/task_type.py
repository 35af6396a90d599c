"""What every task type provides.

A task type is one module in ``medfoundry.tasks`` with one class implementing ``TaskType``:
the head it puts on a shared feature, its loss normalised so that chance level is about 1
(so that no task dominates the shared gradient without tuned weights), its metrics and how it
collates targets, and what an evaluation needs to know about it (its primary metric, the
evaluation modes that apply, how a probe reads its targets, its ignore index) and what
``medfoundry predict`` writes for it (``predict``: its outputs as class probabilities, per-pixel
classes or scored boxes). Recipes and evaluation ask the task, never its type name, so adding a
task type is one module, one ``register`` line and one test file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch
from torch import nn

from medfoundry.data.record import TargetKind
from medfoundry.tasks.predictions import Predictions
from medfoundry.tasks.spec import TaskSpec

__all__ = [
    "EVALUATION_MODES",
    "EvaluationMode",
    "FeatureKind",
    "ProbeTargets",
    "TaskMetrics",
    "TaskType",
    "TaskTypeClass",
]

FeatureKind = Literal["pooled", "pixel", "pyramid", "masked", "views"]
"""The shared feature a head consumes: the pooled deepest map ``(B, C)``, the pixel decoder's
per-pixel embedding ``(B, E, H, W)``, the detection decoder's per-level tower outputs, or the
output of the shared masked-image objective, which masks the images at the encoder's input and
so runs the encoder itself, or the shared encoder and the images themselves (``views``: the head
runs the encoder on views it makes of the images, e.g. two random views)."""

EvaluationMode = Literal["linear", "knn", "finetune", "frozen-decoder", "linear-decoder"]
"""How a study evaluates an encoder on a task: a linear or k-NN probe on frozen pooled features,
fine-tuning everything, training the task's decoder and head on the frozen encoder, or a
per-pixel linear map of the frozen encoder's feature maps (dense tasks)."""
EVALUATION_MODES: tuple[EvaluationMode, ...] = (
    "linear",
    "knn",
    "finetune",
    "frozen-decoder",
    "linear-decoder",
)

ProbeTargets = Literal["one_label", "each_class"]
"""How a probe on frozen features reads a task's targets: one class index per sample (one
multi-class model), or one 0/1/NaN column per class (one binary model per class, unlabelled
entries left out)."""


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
        primary_metric: The metric that ranks models on this task (curves, early stopping,
            data efficiency; higher is better); ``None``: nothing to evaluate on held-out data.
        evaluation_modes: The study modes that apply to the task (none when there is no
            primary metric).
        probe_targets: How linear and k-NN probes read the targets (``None``: no probe modes).
        postprocess_text: How ``predict`` turns the head's outputs into predictions, in words
            (exported with the ONNX graphs).
        spec: The task's spec.
        ignore_index: Target value that counts nowhere (unlabelled mask pixels), or ``None``.
    """

    feature: ClassVar[FeatureKind]
    target: ClassVar[TargetKind]
    primary_metric: ClassVar[str | None]
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]]
    probe_targets: ClassVar[ProbeTargets | None]
    postprocess_text: ClassVar[str]
    spec: TaskSpec

    @property
    def ignore_index(self) -> int | None:
        """Target value excluded from loss and metrics, or ``None``."""

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

    def predict(self, outputs: Any, *, image_size: tuple[int, int]) -> Predictions:
        """The head's outputs for a batch as the predictions ``medfoundry predict`` writes.

        Args:
            outputs: The head's output for a batch of network inputs.
            image_size: ``(H, W)`` of the network input.

        Returns:
            Class probabilities, per-pixel class scores or scored boxes (``tasks.predictions``).

        Raises:
            ValueError: the task is label-free (``primary_metric`` is ``None``) and predicts
                nothing; predict and export leave such tasks out.
        """


TaskTypeClass = type[TaskType]
"""A task-type class: called with a spec, it returns the task; ``feature`` and ``target`` are
readable on the class itself."""

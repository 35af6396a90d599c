"""Multi-label classification with missing labels.

Each class is an independent yes/no question. Entries that are not labelled (NaN in the
targets; empty, -1 or NaN in a manifest) are left out of the loss and the metrics, so datasets
that label different subsets of findings can share one head.

Loss: binary cross-entropy over labelled entries / ln(2): exactly 1 at p = 0.5.
Metrics: macro AUROC over labelled entries, accuracy at threshold 0.5 over labelled entries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from medfoundry.data.record import TargetKind
from medfoundry.errors import ConfigError
from medfoundry.tasks.options import parse_options
from medfoundry.tasks.predictions import ClassPredictions
from medfoundry.tasks.scores import unit_weights, weighted_macro_auroc
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import EvaluationMode, FeatureKind, ProbeTargets

__all__ = ["MultilabelTask"]


class MultilabelOptions(BaseModel):
    """A multilabel task has no options yet."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MultilabelTask:
    """``C`` independent binary labels per image, any of which may be missing.

    Input to the head: pooled features ``(B, in_channels)``. Output: logits ``(B, C)``.
    Targets: ``(B, C)`` float32 of 1.0 / 0.0 / NaN (missing).

    Examples:
        >>> spec = TaskSpec(name="findings", type="multilabel", classes=["a", "b"],
        ...                 source={"path": "f.csv"})
        >>> task = MultilabelTask(spec)
        >>> targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
        >>> round(task.loss(torch.zeros(2, 2), targets).item(), 4)
        1.0
    """

    feature: ClassVar[FeatureKind] = "pooled"
    target: ClassVar[TargetKind] = "multilabel"
    primary_metric: ClassVar[str | None] = "auroc"
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]] = ("linear", "knn", "finetune")
    probe_targets: ClassVar[ProbeTargets | None] = "each_class"
    postprocess_text: ClassVar[str] = "sigmoid of each logit"
    ignore_index: ClassVar[None] = None

    def __init__(self, spec: TaskSpec) -> None:
        if spec.num_classes < 1:
            raise ConfigError(f"task '{spec.name}': classes: multilabel needs at least 1 class, got none")
        self.spec = spec
        self.options = parse_options(spec, MultilabelOptions)

    def build_head(self, in_channels: int) -> nn.Module:
        return nn.Linear(in_channels, self.spec.num_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labelled = ~torch.isnan(targets)
        if not labelled.any():
            # keeps the graph (and DDP's view of which parameters are used) intact
            return outputs.sum() * 0.0
        bce = F.binary_cross_entropy_with_logits(outputs.float()[labelled], targets[labelled])
        return bce / math.log(2.0)

    def metrics(self) -> MultilabelMetrics:
        return MultilabelMetrics()

    def collate_targets(self, targets: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(targets)).float()

    def predict(self, outputs: torch.Tensor, *, image_size: tuple[int, int]) -> ClassPredictions:
        """Each class's sigmoid probability; every class at probability >= 0.5."""
        probabilities = outputs.float().sigmoid()
        predicted = [row.nonzero().flatten().tolist() for row in probabilities >= 0.5]
        return ClassPredictions(probabilities, predicted)


class MultilabelMetrics:
    """Macro AUROC and accuracy over labelled entries only.

    ``items()``, ``score_items`` and ``chance`` as in ``ClassificationMetrics``: ``compute()``
    is ``score_items`` with every item counted once.
    """

    def __init__(self) -> None:
        self._scores: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self._scores.append(outputs.detach().float().sigmoid().cpu().numpy())
        self._targets.append(targets.detach().float().cpu().numpy())

    def items(self) -> dict[str, np.ndarray]:
        """Per test item: ``probabilities`` and ``targets`` (1 / 0 / NaN), both ``(N, C)`` float32."""
        if not self._targets:
            return {"probabilities": np.zeros((0, 0), np.float32), "targets": np.zeros((0, 0), np.float32)}
        return {
            "probabilities": np.concatenate(self._scores).astype(np.float32),
            "targets": np.concatenate(self._targets).astype(np.float32),
        }

    def compute(self) -> dict[str, float]:
        items = self.items()
        scores = self.score_items(items, unit_weights(len(items["targets"])))
        return {name: float(values[0]) for name, values in scores.items()}

    def score_items(self, items: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric under each row of ``weights`` ``(B, N)``: name -> ``(B,)``."""
        scores, targets = items["probabilities"], items["targets"]
        if targets.size == 0:
            return {
                "auroc": np.full(weights.shape[0], math.nan),
                "accuracy": np.full(weights.shape[0], math.nan),
            }
        labelled = ~np.isnan(targets)
        correct = ((scores >= 0.5) == (targets == 1.0)) & labelled
        with np.errstate(invalid="ignore", divide="ignore"):
            entries = weights @ labelled.sum(axis=1).astype(np.float64)
            accuracy = np.where(
                entries > 0, weights @ correct.sum(axis=1).astype(np.float64) / entries, math.nan
            )
        return {"auroc": weighted_macro_auroc(targets, scores, weights), "accuracy": accuracy}

    def chance(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        """Scores of answering each class's more frequent value for every image (accuracy), 0.5 (AUROC)."""
        targets = items["targets"]
        labelled = ~np.isnan(targets)
        if not labelled.any():
            return {}
        positives = np.nansum(targets, axis=0)
        majority = np.maximum(positives, labelled.sum(axis=0) - positives).sum()
        return {"auroc": 0.5, "accuracy": float(majority / labelled.sum())}

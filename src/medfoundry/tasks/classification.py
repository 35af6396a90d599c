"""Multi-class classification: one linear layer on the pooled encoder vector.

Loss: cross-entropy / ln(C), which is exactly 1 for a uniform prediction [0].
Metrics: accuracy, balanced accuracy (mean per-class recall), macro one-vs-rest AUROC and the
expected calibration error (ECE, lower is better).

[0] Schäfer et al., "Overcoming data scarcity in biomedical imaging with a foundational
    multi-task model", Nature Computational Science 4, 495-509 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medfoundry.data.record import TargetKind
from medfoundry.errors import ConfigError
from medfoundry.tasks.options import parse_options
from medfoundry.tasks.predictions import ClassPredictions
from medfoundry.tasks.scores import (
    unit_weights,
    weighted_accuracy,
    weighted_balanced_accuracy,
    weighted_ece,
    weighted_macro_auroc,
)
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import EvaluationMode, FeatureKind, ProbeTargets

__all__ = ["ClassificationTask"]


class ClassificationOptions(BaseModel):
    """Options of a classification task.

    Args:
        label_smoothing: Cross-entropy label smoothing in [0, 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)


class ClassificationTask:
    """One label per image out of ``C >= 2`` classes.

    Input to the head: pooled features ``(B, in_channels)``. Output: logits ``(B, C)``.
    Targets: class indices ``(B,)`` int64.

    Examples:
        >>> spec = TaskSpec(name="organ", type="classification", classes=["a", "b", "c"],
        ...                 source={"path": "organ.csv"})
        >>> task = ClassificationTask(spec)
        >>> logits = torch.zeros(4, 3)  # uniform prediction
        >>> round(task.loss(logits, torch.tensor([0, 1, 2, 0])).item(), 4)
        1.0
    """

    feature: ClassVar[FeatureKind] = "pooled"
    target: ClassVar[TargetKind] = "label"
    primary_metric: ClassVar[str | None] = "balanced_accuracy"
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]] = ("linear", "knn", "finetune")
    probe_targets: ClassVar[ProbeTargets | None] = "one_label"
    postprocess_text: ClassVar[str] = "softmax over the K logits"
    ignore_index: ClassVar[None] = None

    def __init__(self, spec: TaskSpec) -> None:
        if spec.num_classes < 2:
            raise ConfigError(
                f"task '{spec.name}': classification needs at least 2 classes, got {spec.classes}"
            )
        self.spec = spec
        self.options = parse_options(spec, ClassificationOptions)

    def build_head(self, in_channels: int) -> nn.Module:
        return nn.Linear(in_channels, self.spec.num_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(outputs.float(), targets, label_smoothing=self.options.label_smoothing)
        return ce / math.log(self.spec.num_classes)

    def metrics(self) -> ClassificationMetrics:
        return ClassificationMetrics(self.spec.num_classes)

    def collate_targets(self, targets: Sequence[int]) -> torch.Tensor:
        return torch.as_tensor(list(targets), dtype=torch.long)

    def predict(self, outputs: torch.Tensor, *, image_size: tuple[int, int]) -> ClassPredictions:
        """Every class's softmax probability; the most probable class."""
        probabilities = outputs.float().softmax(dim=1)
        return ClassPredictions(probabilities, [[int(i)] for i in probabilities.argmax(dim=1).tolist()])


class ClassificationMetrics:
    """Accuracy, balanced accuracy, macro AUROC and expected calibration error over all batches added.

    AUROC averages over classes that have both positive and negative examples in the split
    (others have no defined AUROC); NaN when no class qualifies. Balanced accuracy is the mean
    recall over the classes present in the split. ECE bins the top-class confidence into 15
    equal-width bins (``tasks.scores.weighted_ece``).

    ``items()`` returns what was added per test item (probabilities and labels), and
    ``score_items`` scores it under item weights (bootstrap resamples); ``compute()`` is
    ``score_items`` with every item counted once, so a bootstrap is always about the reported value.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self._probs.append(outputs.detach().float().softmax(dim=1).cpu().numpy())
        self._labels.append(targets.detach().cpu().numpy())

    def items(self) -> dict[str, np.ndarray]:
        """Per test item: ``probabilities`` ``(N, C)`` float32 and ``labels`` ``(N,)`` int64."""
        if not self._labels:
            return {
                "probabilities": np.zeros((0, self.num_classes), np.float32),
                "labels": np.zeros(0, np.int64),
            }
        return {
            "probabilities": np.concatenate(self._probs).astype(np.float32),
            "labels": np.concatenate(self._labels).astype(np.int64),
        }

    def compute(self) -> dict[str, float]:
        items = self.items()
        scores = self.score_items(items, unit_weights(len(items["labels"])))
        return {name: float(values[0]) for name, values in scores.items()}

    def score_items(self, items: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric under each row of ``weights`` ``(B, N)``: name -> ``(B,)``."""
        probs, labels = items["probabilities"], items["labels"]
        if labels.size == 0:
            return {
                k: np.full(weights.shape[0], math.nan)
                for k in ("accuracy", "balanced_accuracy", "auroc", "ece")
            }
        preds = probs.argmax(axis=1)
        correct = preds == labels
        return {
            "accuracy": weighted_accuracy(correct, weights),
            "balanced_accuracy": weighted_balanced_accuracy(labels, preds, self.num_classes, weights=weights),
            "auroc": weighted_macro_auroc(np.eye(self.num_classes)[labels], probs, weights),
            "ece": weighted_ece(probs.max(axis=1), correct, weights),
        }

    def chance(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        """What a prediction that ignores the image scores on these items: the majority class's
        share (accuracy), one over the classes present (balanced accuracy), 0.5 (AUROC)."""
        labels = items["labels"]
        if labels.size == 0:
            return {}
        counts = np.bincount(labels, minlength=self.num_classes)
        return {
            "accuracy": float(counts.max() / labels.size),
            "balanced_accuracy": 1.0 / int((counts > 0).sum()),
            "auroc": 0.5,
        }

"""Multi-class classification: one linear layer on the pooled encoder vector.

Loss: cross-entropy / ln(C), which is exactly 1 for a uniform prediction [0].
Metrics: accuracy, balanced accuracy (mean per-class recall) and macro one-vs-rest AUROC.

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
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from torch import nn

from medfoundry.data.record import TargetKind
from medfoundry.errors import ConfigError
from medfoundry.tasks.options import parse_options
from medfoundry.tasks.scores import macro_auroc
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import FeatureKind

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

    Options: ClassVar[type[BaseModel]] = ClassificationOptions
    feature: ClassVar[FeatureKind] = "pooled"
    target: ClassVar[TargetKind] = "label"

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


class ClassificationMetrics:
    """Accuracy, balanced accuracy and macro AUROC over all batches added.

    AUROC averages over classes that have both positive and negative examples in the split
    (others have no defined AUROC); NaN when no class qualifies.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self._probs.append(outputs.detach().float().softmax(dim=1).cpu().numpy())
        self._labels.append(targets.detach().cpu().numpy())

    def compute(self) -> dict[str, float]:
        if not self._labels:
            return {"accuracy": math.nan, "balanced_accuracy": math.nan, "auroc": math.nan}
        probs, labels = np.concatenate(self._probs), np.concatenate(self._labels)
        preds = probs.argmax(axis=1)
        onehot = np.eye(self.num_classes)[labels]
        return {
            "accuracy": float(accuracy_score(labels, preds)),
            "balanced_accuracy": _balanced_accuracy(labels, preds),
            "auroc": macro_auroc(onehot, probs),
        }


def _balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    # sklearn averages recall over the classes present in `labels`, which is what we want;
    # it warns when predictions contain classes absent from labels, which is normal here.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(labels, preds))

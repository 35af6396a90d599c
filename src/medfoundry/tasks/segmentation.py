"""Semantic segmentation: one 1x1 conv on the shared pixel decoder's per-pixel embedding.

Loss: the mean of a soft Dice loss and a focal loss, each about 1 at chance level. The focal
term is divided by its value for a uniform prediction, ``(1 - 1/C)^gamma * ln(C)`` (``ln(C)``
for ``gamma = 0``, the cross-entropy normalisation of UMedPT [0]); the Dice loss
``1 - mean_c dice_c`` is between ``1 - 2/(C+1)`` and 1 at chance without rescaling.
Pixels equal to ``ignore_index`` count in neither term nor in the metrics.

Metrics: Dice per class over the whole split (``2 TP / (2 TP + FP + FN)``, summed over all
images, NaN for a class absent from both prediction and target), their mean over
non-background classes, and each class's share of the split's labelled pixels (``share/<class>``,
the same for every model: a Dice of 0 for a class of 0.2 % of the pixels is a small structure
missed, not a model that learnt nothing).

[0] Schäfer et al., Nature Computational Science 4, 495-509 (2024).
[1] Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medfoundry.data.record import DEFAULT_IGNORE_INDEX, TargetKind
from medfoundry.errors import ConfigError
from medfoundry.tasks.options import parse_options
from medfoundry.tasks.predictions import PixelPredictions
from medfoundry.tasks.scores import unit_weights
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import EvaluationMode, FeatureKind, ProbeTargets

__all__ = ["SegmentationTask", "soft_dice_loss", "focal_loss"]


class SegmentationOptions(BaseModel):
    """Options of a segmentation task.

    Args:
        ignore_index: Mask value excluded from loss and metrics (e.g. unlabelled pixels).
        background_index: Class left out of ``mean_dice``; ``None`` averages all classes.
        focal_gamma: Focusing parameter of the focal loss (0 gives cross-entropy).
        dice_smooth: Additive smoothing of the soft Dice ratio.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ignore_index: int = DEFAULT_IGNORE_INDEX
    background_index: int | None = 0
    focal_gamma: float = Field(default=2.0, ge=0.0)
    dice_smooth: float = Field(default=1.0, ge=0.0)


class SegmentationTask:
    """A class per pixel out of ``C >= 2`` classes (index 0 usually background).

    Input to the head: the per-pixel embedding ``(B, E, H, W)``. Output: logits ``(B, C, H, W)``.
    Targets: ``(B, H, W)`` int64 class indices, ``ignore_index`` for unlabelled pixels.

    Examples:
        >>> spec = TaskSpec(name="nuclei", type="segmentation", classes=["background", "nucleus"],
        ...                 source={"path": "n.csv"})
        >>> task = SegmentationTask(spec)
        >>> logits = torch.zeros(1, 2, 4, 4)
        >>> target = torch.zeros(1, 4, 4, dtype=torch.long); target[0, :2] = 1
        >>> round(task.loss(logits, target).item(), 3)  # chance level: 1/2 (1 + 1 - mean Dice), smoothed
        0.735
    """

    feature: ClassVar[FeatureKind] = "pixel"
    target: ClassVar[TargetKind] = "mask"
    primary_metric: ClassVar[str | None] = "mean_dice"
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]] = ("linear-decoder", "frozen-decoder", "finetune")
    probe_targets: ClassVar[ProbeTargets | None] = None
    postprocess_text: ClassVar[str] = "argmax over the K channels (class index per pixel)"

    def __init__(self, spec: TaskSpec) -> None:
        if spec.num_classes < 2:
            raise ConfigError(
                f"task '{spec.name}': segmentation needs at least 2 classes (e.g. background and "
                f"foreground), got {spec.classes}"
            )
        self.spec = spec
        self.options = parse_options(spec, SegmentationOptions)
        o, c = self.options, spec.num_classes
        if o.background_index is not None and not 0 <= o.background_index < c:
            raise ConfigError(f"task '{spec.name}': options.background_index must be in [0, {c - 1}]")
        if 0 <= o.ignore_index < c:
            raise ConfigError(
                f"task '{spec.name}': options.ignore_index {o.ignore_index} is a class index; "
                f"use a value outside [0, {c - 1}]"
            )
        self._focal_at_chance = (1.0 - 1.0 / c) ** o.focal_gamma * math.log(c)

    @property
    def ignore_index(self) -> int:
        """Mask value of unlabelled pixels (the data layer accepts it next to the class indices)."""
        return self.options.ignore_index

    def build_head(self, in_channels: int) -> nn.Module:
        return nn.Conv2d(in_channels, self.spec.num_classes, kernel_size=1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = outputs.float()
        valid = targets != self.options.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        dice = soft_dice_loss(logits, targets, valid, smooth=self.options.dice_smooth)
        focal = focal_loss(logits, targets, valid, gamma=self.options.focal_gamma)
        loss: torch.Tensor = 0.5 * (dice + focal / self._focal_at_chance)
        return loss

    def metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(
            self.spec.classes, self.options.ignore_index, self.options.background_index
        )

    def collate_targets(self, targets: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(targets)).long()

    def predict(self, outputs: torch.Tensor, *, image_size: tuple[int, int]) -> PixelPredictions:
        """The per-pixel logits (the argmax over classes is each pixel's class)."""
        return PixelPredictions(outputs.float())


def soft_dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, *, smooth: float
) -> torch.Tensor:
    """``1 - mean over classes of soft Dice``, summed over the batch's valid pixels.

    Args:
        logits: ``(B, C, H, W)``.
        targets: ``(B, H, W)`` class indices (values at invalid pixels are ignored).
        valid: ``(B, H, W)`` bool, pixels that count.
        smooth: Added to numerator and denominator (keeps absent classes finite).
    """
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1) * valid.unsqueeze(1)
    onehot = F.one_hot(torch.where(valid, targets, 0), num_classes).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1.0 - dice.mean()


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, *, gamma: float
) -> torch.Tensor:
    """Softmax focal loss ``-(1 - p_t)^gamma log p_t`` averaged over valid pixels.

    Written here because ``torchvision.ops.sigmoid_focal_loss`` is the sigmoid (one-vs-rest)
    form; semantic segmentation needs the softmax form.
    """
    log_p = logits.log_softmax(dim=1)
    safe_targets = torch.where(valid, targets, 0).unsqueeze(1)
    log_pt = log_p.gather(1, safe_targets).squeeze(1)[valid]
    return (-((1.0 - log_pt.exp()) ** gamma) * log_pt).mean()


class SegmentationMetrics:
    """Per-class Dice accumulated over the whole split (not averaged per image).

    ``items()`` keeps each image's per-class true positive, false positive and false negative
    pixel counts; Dice over any weighting of the images is computed from their weighted sums, so
    ``compute()`` is ``score_items`` with every image counted once.
    """

    def __init__(self, classes: list[str], ignore_index: int, background_index: int | None) -> None:
        self.classes = classes
        self.ignore_index = ignore_index
        self.background_index = background_index
        self._counts: list[np.ndarray] = []  # per batch: (images, 3, C) tp, fp, fn

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        n = len(self.classes)
        pred = outputs.detach().argmax(dim=1).cpu()
        true = targets.detach().cpu()
        valid = true != self.ignore_index
        # per image, a confusion matrix via bincount: rows are targets, columns predictions
        codes = torch.where(valid, true * n + pred, n * n)
        per_image = torch.stack([torch.bincount(c.flatten(), minlength=n * n + 1)[: n * n] for c in codes])
        confusion = per_image.reshape(-1, n, n).numpy()
        tp = np.diagonal(confusion, axis1=1, axis2=2)
        self._counts.append(np.stack([tp, confusion.sum(axis=1) - tp, confusion.sum(axis=2) - tp], axis=1))

    def items(self) -> dict[str, np.ndarray]:
        """Per test image: ``counts`` ``(N, 3, C)`` int64 (true positives, false positives, false
        negatives per class, in pixels)."""
        n = len(self.classes)
        counts = np.concatenate(self._counts) if self._counts else np.zeros((0, 3, n), np.int64)
        return {"counts": counts.astype(np.int64)}

    def compute(self) -> dict[str, float]:
        items = self.items()
        scores = self.score_items(items, unit_weights(len(items["counts"])))
        return {name: float(values[0]) for name, values in scores.items()}

    def score_items(self, items: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric under each row of ``weights`` ``(B, N)``: name -> ``(B,)``."""
        counts = items["counts"].astype(np.float64)
        tp, fp, fn = (np.einsum("bn,nc->bc", weights, counts[:, k]) for k in range(3))
        denominator = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), math.nan)
        result = {f"dice/{name}": dice[:, c] for c, name in enumerate(self.classes)}
        keep = [i for i in range(len(self.classes)) if i != self.background_index]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # every kept class absent: NaN
            result["mean_dice"] = np.nanmean(dice[:, keep], axis=1)
        truth = tp + fn  # labelled pixels of each class
        labelled = truth.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(labelled > 0, truth / np.maximum(labelled, 1e-12), math.nan)
        result |= {f"share/{name}": share[:, c] for c, name in enumerate(self.classes)}
        return result

    def chance(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        """Dice of labelling pixels at random with the test set's class frequencies: each class's
        expected Dice is its pixel share."""
        counts = items["counts"]
        truth = (counts[:, 0] + counts[:, 2]).sum(axis=0).astype(np.float64)  # tp + fn per class
        if truth.sum() == 0:
            return {}
        share = truth / truth.sum()
        keep = [i for i in range(len(self.classes)) if i != self.background_index and truth[i] > 0]
        result = {f"dice/{name}": float(share[c]) for c, name in enumerate(self.classes) if truth[c] > 0}
        if keep:
            result["mean_dice"] = float(share[keep].mean())
        return result

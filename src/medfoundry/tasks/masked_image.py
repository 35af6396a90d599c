"""Masked-image modelling on unlabelled images (MAE [0], VIS-MAE [1]) as one more task.

A ``masked_image`` task is a source of unlabelled images (target ``image``: no classes, no
labels). Its batches go to the model's shared masked-image objective (``model.masked_image``
in the config): the objective masks 75% of each image's 16 x 16-pixel units, runs the shared
encoder on what is left, and reconstructs the masked pixels. So one run can mix labelled
classification, segmentation and detection tasks with unlabelled masked-image tasks in the
memory-constant loop, with memory still flat.

The task adds no layers (its head is the identity): the mask token sits at the encoder's input
and the decoder serves every masked-image task, so both are shared and step once per round with
the encoder. Several ``masked_image`` tasks (e.g. one per modality) are sampled round-robin like
every task, so a small source weighs as much as a large one.

Loss: the objective's masked-unit MSE on per-unit normalised pixels, about 1 at chance (exactly
``(n - 1) / n`` for predicting zeros, ``n = 3 * 16^2``; see ``medfoundry.models.masking``).
Metrics: none beyond the loss.

[0] He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
[1] Liu et al., "VIS-MAE", arXiv 2402.01034 (2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from medfoundry.data.record import TargetKind
from medfoundry.errors import ConfigError
from medfoundry.tasks.options import parse_options
from medfoundry.tasks.predictions import Predictions
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import EvaluationMode, FeatureKind, ProbeTargets

__all__ = ["MaskedImageTask"]


class MaskedImageOptions(BaseModel):
    """A masked-image task has no options: the objective's settings are ``model.masked_image``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _ObjectiveOutput(Protocol):
    loss: torch.Tensor


class MaskedImageTask:
    """Unlabelled images, learned from by masked-image modelling.

    Input to the head: the objective's output (``loss``, ``pred``, ``mask``). Output: the same.
    Targets: none (``None``).

    Examples:
        >>> spec = TaskSpec(name="ct_slices", type="masked_image", source={"path": "ct.csv"})
        >>> task = MaskedImageTask(spec)
        >>> task.feature, task.target, task.collate_targets([None, None])
        ('masked', 'image', None)
    """

    feature: ClassVar[FeatureKind] = "masked"
    target: ClassVar[TargetKind] = "image"
    primary_metric: ClassVar[str | None] = None
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]] = ()
    probe_targets: ClassVar[ProbeTargets | None] = None
    postprocess_text: ClassVar[str] = "none: reconstructs the masked units (not exported)"
    ignore_index: ClassVar[None] = None

    def __init__(self, spec: TaskSpec) -> None:
        if spec.classes:
            raise ConfigError(
                f"task '{spec.name}': classes: masked_image tasks are unlabelled; remove the classes "
                f"{spec.classes}"
            )
        self.spec = spec
        self.options = parse_options(spec, MaskedImageOptions)

    def build_head(self, in_channels: int) -> nn.Module:
        return nn.Identity()

    def loss(self, outputs: _ObjectiveOutput, targets: None) -> torch.Tensor:
        return outputs.loss

    def metrics(self) -> MaskedImageMetrics:
        return MaskedImageMetrics()

    def collate_targets(self, targets: Sequence[Any]) -> None:
        return None

    def predict(self, outputs: Any, *, image_size: tuple[int, int]) -> Predictions:
        """Nothing to predict: a masked-image task reconstructs its own images (label-free pretraining)."""
        raise ValueError(
            f"task '{self.spec.name}': a masked-image task reconstructs its own images and predicts nothing"
        )


class MaskedImageMetrics:
    """Nothing beyond the loss, which validation reports for every task."""

    def update(self, outputs: Any, targets: Any) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {}

    def items(self) -> dict[str, np.ndarray]:
        return {}

    def score_items(self, items: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def chance(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        return {}

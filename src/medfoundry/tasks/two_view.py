"""A label-free two-view task (VICReg [0]): two random views of every image agree, without collapse.

A ``two_view`` task is a source of unlabelled images (target ``image``: no classes, no labels).
Its head makes two random views of each image of the batch (a resized crop, a small rotation,
brightness, contrast and gamma, sometimes grayscale or blur: ``RandomViews``), runs the shared
encoder on both, and projects the pooled deepest maps with a small MLP (the "expander"). The loss
pulls the two views of an image together (invariance) while keeping every output dimension
spread over the batch (variance) and the dimensions decorrelated (covariance), so the encoder
cannot satisfy it by mapping everything to one point. Beside labelled tasks it is one more task
of the memory-constant loop: its views are freed by its own backward, so memory stays flat.

Why: supervised pretraining for a few passes over small labelled sets makes features that
separate the pretraining classes and little else; a label-free term on every image keeps the
early and middle stages general (docs/demo.md, "Labels saved").

Loss: VICReg's ``25 * invariance + 25 * variance + 1 * covariance``, divided by 25 so that a
collapsed representation (every image the same output) scores 1 (0.99: the std's eps), like chance for the
other task types. Validation draws its views from a fixed seed, so its loss is comparable across
steps and validating does not move the training random streams.

[0] Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", ICLR 2022 (coefficients 25 / 25 / 1, std floor 1, eps 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F  # noqa: N812

from medfoundry.data.record import TargetKind
from medfoundry.errors import ConfigError
from medfoundry.tasks.masked_image import MaskedImageMetrics
from medfoundry.tasks.options import parse_options
from medfoundry.tasks.predictions import Predictions
from medfoundry.tasks.random_views import RandomViews
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import EvaluationMode, FeatureKind, ProbeTargets

__all__ = ["TwoViewTask", "vicreg_loss"]

VALIDATION_SEED = 0
"""Seed of the views validation draws (fixed: the same views at every validation)."""


class TwoViewOptions(BaseModel):
    """Options of a ``two_view`` task.

    Args:
        expander_dim: Width of the expander's three layers (VICReg uses 8,192 for ResNet-50 on
            ImageNet; 1,024 keeps it cheap at the demo's scale).
        crop_scale: Range of the crop's share of the image area.
        max_degrees: Random rotation up to this many degrees.
        enable_flips: Random horizontal and vertical flips (off by default: left and right can be
            the label of a downstream task, e.g. brain regions).
        brightness: Brightness factor in ``[1 - b, 1 + b]``.
        contrast: Contrast factor in ``[1 - c, 1 + c]``.
        gamma: Gamma in ``[1 - g, 1 + g]``.
        grayscale_probability: Chance of a view turned gray.
        blur_probability: Chance of a Gaussian blur (sigma 0.1 to 1.5 pixels at 64 px, scaled).
        invariance_weight: VICReg's ``lambda``; variance_weight: ``mu``; covariance_weight: ``nu``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    expander_dim: int = Field(default=1024, ge=8)
    crop_scale: tuple[float, float] = (0.35, 1.0)
    max_degrees: float = Field(default=10.0, ge=0, le=180)
    enable_flips: bool = False
    brightness: float = Field(default=0.4, ge=0, lt=1)
    contrast: float = Field(default=0.4, ge=0, lt=1)
    gamma: float = Field(default=0.3, ge=0, lt=1)
    grayscale_probability: float = Field(default=0.2, ge=0, le=1)
    blur_probability: float = Field(default=0.5, ge=0, le=1)
    invariance_weight: float = Field(default=25.0, ge=0)
    variance_weight: float = Field(default=25.0, gt=0)
    covariance_weight: float = Field(default=1.0, ge=0)


class TwoViewTask:
    """Unlabelled images, learned from by making two random views of each agree (VICReg).

    Input to the head: the shared encoder and the batch's images (the head runs the encoder on
    its views). Output: the two views' expanded embeddings ``(z1, z2)``, each ``(B, D)``.
    Targets: none (``None``).

    Examples:
        >>> spec = TaskSpec(name="views", type="two_view", source={"path": "all.csv"})
        >>> task = TwoViewTask(spec)
        >>> task.feature, task.target, task.collate_targets([None, None])
        ('views', 'image', None)
        >>> z = torch.zeros(8, 16)  # a collapsed representation: every image the same output
        >>> round(float(task.loss((z, z), None)), 2)  # 1 less VICReg's eps in the std
        0.99
    """

    feature: ClassVar[FeatureKind] = "views"
    target: ClassVar[TargetKind] = "image"
    primary_metric: ClassVar[str | None] = None
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]] = ()
    probe_targets: ClassVar[ProbeTargets | None] = None
    postprocess_text: ClassVar[str] = "none: label-free two-view pretraining (not exported)"
    ignore_index: ClassVar[None] = None

    def __init__(self, spec: TaskSpec) -> None:
        if spec.classes:
            raise ConfigError(
                f"task '{spec.name}': classes: two_view tasks are unlabelled; "
                f"remove the classes {spec.classes}"
            )
        self.spec = spec
        self.options = parse_options(spec, TwoViewOptions)
        low, high = self.options.crop_scale
        if not 0 < low <= high <= 1:
            raise ConfigError(
                f"task '{spec.name}': options.crop_scale: need 0 < low <= high <= 1, got {low}, {high}"
            )

    def build_head(self, in_channels: int) -> TwoViewHead:
        o = self.options
        views = RandomViews(
            crop_scale=o.crop_scale,
            max_degrees=o.max_degrees,
            enable_flips=o.enable_flips,
            brightness=o.brightness,
            contrast=o.contrast,
            gamma=o.gamma,
            grayscale_probability=o.grayscale_probability,
            blur_probability=o.blur_probability,
        )
        return TwoViewHead(views, expander(in_channels, o.expander_dim))

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: None) -> torch.Tensor:
        o = self.options
        return (
            vicreg_loss(*outputs, weights=(o.invariance_weight, o.variance_weight, o.covariance_weight))
            / o.variance_weight
        )

    def metrics(self) -> MaskedImageMetrics:
        return MaskedImageMetrics()  # nothing beyond the loss

    def collate_targets(self, targets: Sequence[Any]) -> None:
        return None

    def predict(self, outputs: Any, *, image_size: tuple[int, int]) -> Predictions:
        """Nothing to predict: a two-view task compares views of its own images (label-free pretraining)."""
        raise ValueError(
            f"task '{self.spec.name}': a two-view task compares views of its own images and predicts nothing"
        )


def expander(in_channels: int, width: int) -> nn.Sequential:
    """VICReg's expander: two Linear-BatchNorm-ReLU layers and a linear output, all ``width`` wide."""
    return nn.Sequential(
        nn.Linear(in_channels, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width),
    )


class TwoViewHead(nn.Module):
    """Two random views of each image through the shared encoder (one forward of ``2B`` images),
    the pooled deepest maps through the expander. Its parameters are the expander's only: the
    encoder is passed in at each call, not owned."""

    def __init__(self, views: RandomViews, expander: nn.Module) -> None:
        super().__init__()
        self.views = views
        self.expander = expander

    def forward(self, encoder: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            pair = torch.cat([self.views(images), self.views(images)])
        else:  # the same views at every validation, and the training streams left untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(VALIDATION_SEED)
                pair = torch.cat([self.views(images), self.views(images)])
        pooled = encoder(pair)[-1].mean(dim=(-2, -1))
        z = self.expander(pooled)
        z1, z2 = z.chunk(2)
        return z1, z2


def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, *, weights: tuple[float, float, float] = (25.0, 25.0, 1.0)
) -> torch.Tensor:
    """VICReg's loss of two views' embeddings ``(B, D)`` (computed in float32).

    ``weights``: invariance (mean squared difference), variance (hinge of each dimension's
    standard deviation at 1, mean over dimensions and the two views) and covariance (squared
    off-diagonal covariances, summed and divided by ``D``, for each view). A batch of one image
    has no spread to measure: its variance and covariance terms are 1 and 0.

    Examples:
        >>> z = torch.zeros(4, 3)
        >>> round(float(vicreg_loss(z, z)), 2)  # collapsed: no difference, no spread (std = eps^0.5)
        24.75
    """
    z1, z2 = z1.float(), z2.float()
    invariance = F.mse_loss(z1, z2)
    if z1.shape[0] < 2:
        return weights[0] * invariance + weights[1]
    variance = covariance = z1.new_zeros(())
    for z in (z1, z2):
        centred = z - z.mean(dim=0)
        std = torch.sqrt(centred.var(dim=0) + 1e-4)
        variance = variance + F.relu(1 - std).mean() / 2
        cov = centred.T @ centred / (z.shape[0] - 1)
        off_diagonal = cov - torch.diag(torch.diagonal(cov))
        covariance = covariance + off_diagonal.pow(2).sum() / z.shape[1]
    return weights[0] * invariance + weights[1] * variance + weights[2] * covariance

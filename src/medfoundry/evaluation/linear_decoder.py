"""The ``linear-decoder`` mode: a per-pixel linear classifier on a frozen encoder's feature maps.

The dense counterpart of the linear probe, as DINOv2's linear segmentation evaluation [0] does
it: the chosen pyramid levels of the frozen encoder are upsampled (bilinear) to the finest of
them and concatenated, each channel is standardised with the training subset's statistics, one
linear map per pixel (a 1x1 convolution) gives class logits, and the logits are upsampled to
the mask's size. The weights minimise the class-balanced cross-entropy plus an L2 penalty, a
convex problem solved to its optimum by full-batch L-BFGS (no seed, no learning rate, no step
budget to tune); the penalty is chosen on the validation split (the task's primary metric), as
the linear probe chooses ``C``.

Nothing under the encoder is trained but one weight per channel and class, so the score says
what the frozen features hold at each pixel, and a cell costs seconds where ``frozen-decoder``
(a U-Net decoder trained from scratch) costs minutes on a CPU: the mode a quick study (the
demo) can afford for every fraction and seed. A study extracts the features once per encoder
and task, without augmentation.

[0] Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024
    (linear segmentation: a linear layer on frozen patch features, logits upsampled).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Record, ignore_index_or_default
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder
from medfoundry.evaluation.study_pixels import StudyPixels
from medfoundry.evaluation.task_loaders import task_loader
from medfoundry.tasks.task_type import TaskMetrics, TaskType

__all__ = ["DenseFeatures", "LinearDecoder", "LinearDecoderConfig", "dense_features", "fit_linear_decoder"]


class LinearDecoderConfig(BaseModel):
    """The ``linear-decoder`` mode's features and fit.

    Args:
        feature_levels: Pyramid levels upsampled to the finest of them and concatenated
            (``null``: every level; the finest carries the detail a mask needs).
        l2_values: Penalties on the squared weights (summed), one chosen per cell on the
            validation split.
        max_iter: L-BFGS iterations per fit (full batch).
        batch_size: Images per chunk of the full-batch gradient, and per forward pass when
            extracting features (memory, not the result).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_levels: list[int] | None = None
    l2_values: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1], min_length=1
    )
    max_iter: int = Field(default=200, ge=1)
    batch_size: int = Field(default=64, ge=1)


@dataclass(frozen=True)
class DenseFeatures:
    """Frozen feature maps of some records and their targets.

    Attributes:
        maps: ``(N, h, w, C)`` float32 (channels last: a linear layer over them is about ten
            times faster than a 1x1 convolution over ``(N, C, h, w)`` on a CPU), the chosen
            levels at the finest one's resolution.
        targets: ``(N, H, W)`` int64 masks at the input size.
    """

    maps: torch.Tensor
    targets: torch.Tensor
    rows: dict[tuple[Path, str | None, int | None], int] = field(default_factory=dict)

    def subset(self, records: Sequence[Record]) -> DenseFeatures:
        """The maps and targets of ``records`` (each one of those these features were made of)."""
        index = [self.rows[r.key] for r in records]
        return DenseFeatures(self.maps[index], self.targets[index])


@torch.no_grad()  # not inference mode: the decoder's fit takes gradients through them
def dense_features(
    encoder: PretrainedEncoder,
    task: TaskType,
    records: Sequence[Record],
    *,
    cfg: LinearDecoderConfig,
    preprocessing: Preprocessing | None = None,
    pixels: StudyPixels | None = None,
) -> DenseFeatures:
    """The frozen encoder's chosen levels on ``records`` (no augmentation), with their masks;
    ``subset`` looks records up (a study extracts a task's features once for all its cells)."""
    loader = task_loader(
        "features", task, records, encoder.image_size, cfg.batch_size, 0, preprocessing, pixels
    )
    maps, targets = [], []
    for batch in loader:
        pyramid = encoder(batch.images.to(encoder.device))
        chosen = pyramid if cfg.feature_levels is None else [pyramid[i] for i in cfg.feature_levels]
        size = max((m.shape[-2:] for m in chosen), key=lambda s: s[0] * s[1])
        upsampled = [F.interpolate(m.float(), size=size, mode="bilinear") for m in chosen]
        maps.append(torch.cat(upsampled, 1).permute(0, 2, 3, 1).contiguous().cpu())
        targets.append(batch.targets.cpu())
    return DenseFeatures(torch.cat(maps), torch.cat(targets), {r.key: i for i, r in enumerate(records)})


class LinearDecoder(nn.Module):
    """Standardisation, one linear map per pixel (a 1x1 convolution) and bilinear upsampling of
    the logits to the mask size: ``(N, h, w, C)`` maps -> ``(N, K, H, W)`` logits."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int, size: Sequence[int]):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = nn.Linear(mean.numel(), num_classes)
        self.size = tuple(size)

    def standardise(self, maps: torch.Tensor) -> torch.Tensor:
        return (maps - self.mean) / self.std

    def forward(self, maps: torch.Tensor, *, standardised: bool = False) -> torch.Tensor:
        logits = self.linear(maps if standardised else self.standardise(maps))
        return F.interpolate(logits.permute(0, 3, 1, 2), size=self.size, mode="bilinear")


@dataclass(frozen=True)
class FittedDecoder:
    """The chosen decoder and its validation score per penalty."""

    decoder: LinearDecoder
    l2: float
    val_scores: dict[float, float]


def fit_linear_decoder(
    task: TaskType,
    train: DenseFeatures,
    val: DenseFeatures,
    *,
    metric: str,
    cfg: LinearDecoderConfig,
) -> FittedDecoder:
    """One decoder per ``l2_values`` on ``train`` (strongest penalty first, each fit starting
    from the previous one's weights); the one with the best validation ``metric``."""
    flat = train.maps.flatten(0, 2)
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    scores: dict[float, float] = {}
    best: tuple[float, LinearDecoder, float] | None = None
    decoder = LinearDecoder(mean, std, task.spec.num_classes, train.targets.shape[-2:])
    nn.init.zeros_(decoder.linear.weight)
    nn.init.zeros_(decoder.linear.bias)
    inputs = decoder.standardise(train.maps)  # the same for every penalty
    for l2 in sorted(cfg.l2_values, reverse=True):
        decoder = copy.deepcopy(decoder)
        _fit(decoder, task, inputs, train.targets, l2=l2, cfg=cfg)
        score = float(score_decoder(decoder, task, val, batch_size=cfg.batch_size).compute()[metric])
        scores[l2] = score
        if best is None or (math.isfinite(score) and not score <= best[0]):
            best = (score, decoder, l2)
    assert best is not None  # l2_values is never empty
    return FittedDecoder(best[1], best[2], scores)


def _fit(
    decoder: LinearDecoder,
    task: TaskType,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    l2: float,
    cfg: LinearDecoderConfig,
) -> None:
    """Full-batch L-BFGS on the class-balanced cross-entropy of the upsampled logits (convex in
    the weights: one optimum per penalty, whatever the start), the gradient summed over chunks
    of ``batch_size`` images."""
    ignore = ignore_index_or_default(task.ignore_index)
    weights = _balanced_class_weights(targets, task.spec.num_classes, ignore)
    total = float(weights[targets[targets != ignore]].sum())
    optimizer = torch.optim.LBFGS(
        decoder.linear.parameters(), max_iter=cfg.max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        value = torch.zeros(())
        for start in range(0, len(inputs), cfg.batch_size):
            end = start + cfg.batch_size
            logits = decoder(inputs[start:end], standardised=True)
            loss = F.cross_entropy(
                logits, targets[start:end], weight=weights, ignore_index=ignore, reduction="sum"
            )
            (loss / total).backward()
            value += loss.detach() / total
        penalty = l2 * decoder.linear.weight.square().sum()
        penalty.backward()
        return value + penalty.detach()

    optimizer.step(closure)
    decoder.eval()


def _balanced_class_weights(targets: torch.Tensor, num_classes: int, ignore: int) -> torch.Tensor:
    """``n / (K * n_k)`` per class present in ``targets`` (every class weighs the same in the
    loss, as the linear probe's ``class_weight: balanced``); 0 for an absent class."""
    counts = torch.bincount(targets[targets != ignore].flatten(), minlength=num_classes)[:num_classes].float()
    present = counts > 0
    weights = torch.zeros(num_classes)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights


@torch.no_grad()
def score_decoder(
    decoder: LinearDecoder, task: TaskType, features: DenseFeatures, *, batch_size: int = 64
) -> TaskMetrics:
    """The task's metric accumulator over ``features`` (``compute()``, ``items()``)."""
    metrics = task.metrics()
    for start in range(0, len(features.maps), batch_size):
        end = start + batch_size
        metrics.update(decoder(features.maps[start:end]), features.targets[start:end])
    return metrics

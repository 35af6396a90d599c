"""Optimizers and the learning-rate schedule.

AdamW (fused kernel) for the shared parameters and for each head (its own optimizer, so that
it can step right after its own backward). Weight decay applies to weights, not to biases and norm
parameters (1-D tensors), as in timm's ``param_groups_weight_decay``.
The schedule is a function of the shared step (linear warm-up, then cosine), so resuming
needs only the step number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = ["OptimizerConfig", "build_adamw", "lr_factor", "set_lr"]


class OptimizerConfig(BaseModel):
    """AdamW settings (UMedPT's Swin setting: lr 1e-4, weight decay 1e-2).

    Args:
        lr: Peak learning rate of the shared parameters.
        head_lr: Peak learning rate of the heads; ``None`` uses ``lr``.
        weight_decay: Decoupled weight decay of weight matrices and kernels.
        betas: Adam betas.
        warmup_steps: Shared steps of linear warm-up from 0.
        min_lr_ratio: Final learning rate of the cosine decay, relative to the peak.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(default=1e-4, gt=0)
    head_lr: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=1e-2, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)


def build_adamw(params: Iterable[nn.Parameter], lr: float, cfg: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW with no weight decay on 1-D parameters (biases, norms); ``params`` may be empty."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # a head without parameters (masked-image tasks) keeps one empty group: stepping it is a no-op
    # the fused kernel (CPU and CUDA) updates all tensors in one call: faster than the default
    # per-tensor loop, which also pays a fixed cost per optimizer (and there is one per head)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]] or groups[:1], lr=lr, betas=cfg.betas, fused=fused
    )
    for group in optimizer.param_groups:
        group["peak_lr"] = lr
    return optimizer


def lr_factor(step: int, total_steps: int, *, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at shared step ``step`` (0-based).

    Examples:
        >>> [round(lr_factor(s, 10, warmup_steps=2, min_lr_ratio=0.0), 3) for s in (0, 1, 2, 6, 9)]
        [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to ``factor`` x its peak lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor

"""Training on one task from a pretrained encoder: full fine-tuning, or a frozen encoder under a
trained decoder and head (segmentation and detection without fine-tuning).

Built from the engine's parts (``build_multitask_model``, ``memory_constant_step`` with one task,
``lr_factor``, ``validate``), with the evaluation protocol added:

- layer-wise learning-rate decay [0]: block ``l`` of ``L`` of the backbone learns at
  ``lr * layer_decay**(L - l)`` (timm's ``param_groups_layer_decay``); what starts from scratch
  (decoders and the head) learns at ``head_lr``: at the fine-tuning ``lr`` a segmentation decoder
  on a frozen encoder barely moved in its budget;
- a step budget that grows with the data: ``epochs`` passes over the training subset, at least
  ``min_steps`` (``dense_min_steps`` for segmentation and detection, whose decoders start from
  scratch) and at most ``max_steps`` (a fixed budget either starves the full-data cells or
  wastes time on the small ones; a frozen 8-class decoder given 80 steps reached a Dice of 0.03
  and nothing said so);
- early stopping: the validation metric is computed every ``eval_every_steps`` (default: ten
  times per budget); after ``stop_after_fraction`` of the budget, training stops once the best
  score is ``patience_fraction`` of the budget old, and the best weights are returned (a few
  flat early evaluations, while a decoder still predicts background everywhere, do not end a
  run); a run whose metric never rose after its first evaluation is flagged (``never_improved``).

A frozen encoder stays in eval mode (its normalisation statistics do not move).

[0] Clark et al., "ELECTRA", ICLR 2020; Bao et al., "BEiT", ICLR 2022 (layer-wise lr decay).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from medfoundry.data.augment import AugmentConfig
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Record
from medfoundry.evaluation.frozen_maps import memoized_maps
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder
from medfoundry.evaluation.study_pixels import StudyPixels
from medfoundry.evaluation.task_loaders import task_dataset, task_loader
from medfoundry.models.build import build_multitask_model
from medfoundry.models.config import DetectionDecoderConfig, ModelConfig, PixelDecoderConfig
from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.tasks.task_type import TaskMetrics, TaskType
from medfoundry.training.device import resolve_precision
from medfoundry.training.multitask_step import Optimizers, memory_constant_step
from medfoundry.training.optim import OptimizerConfig, build_adamw, lr_factor, set_lr
from medfoundry.training.task_batch import TaskCollate
from medfoundry.training.task_loader import CyclicTaskLoader
from medfoundry.training.validation import validate

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "score_model"]

log = logging.getLogger(__name__)

# Chosen on the validation split of the corpus's held-out face segmentation
# (benchmarks/dense_budget.py, docs/benchmarks.md).
DENSE_MIN_STEPS = 400
PATIENCE_FRACTION = 0.25
STOP_AFTER_FRACTION = 0.5


class FinetuneConfig(BaseModel):
    """How a task model is trained in the ``finetune`` and ``frozen-decoder`` modes.

    Args:
        epochs: Step budget in passes over the training subset (so it grows with the data).
        min_steps: Fewest steps of the budget (small subsets).
        dense_min_steps: Fewest steps for segmentation and detection (their decoders start
            from scratch); ``max_steps`` still caps the budget.
        max_steps: Most steps of the budget (large subsets).
        eval_every_steps: Validate this often; default: a tenth of the budget.
        patience_fraction: Stop once the best validation score is this share of the budget old.
        stop_after_fraction: Share of the budget always trained before early stopping may stop.
        batch_size: Images per step (fewer when the training subset is smaller).
        optimizer: AdamW: ``lr`` for the deepest backbone block, ``head_lr`` for what starts
            from scratch (decoders and head), weight decay, warm-up.
        layer_decay: Learning-rate factor per backbone block, from the deepest down; 1 disables.
        grad_clip_norm: Clip gradient norms; ``None`` disables.
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast + loss scaling; CUDA only).
        augment: Training augmentation of images with their masks and boxes (``true``: random
            flips; ``medfoundry.data.AugmentConfig``); the keys a task's own ``augment`` sets replace these.
        num_workers: DataLoader worker processes.
        pixel_decoder: Shared decoder under segmentation heads (the same for every encoder).
        detection_decoder: Shared decoder under detection heads (the same for every encoder).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float = Field(default=30.0, gt=0)
    min_steps: int = Field(default=50, ge=1)
    dense_min_steps: int = Field(default=DENSE_MIN_STEPS, ge=1)
    max_steps: int = Field(default=1000, ge=1)
    eval_every_steps: int | None = Field(default=None, ge=1)
    patience_fraction: float = Field(default=PATIENCE_FRACTION, gt=0, le=1)
    stop_after_fraction: float = Field(default=STOP_AFTER_FRACTION, ge=0, le=1)
    batch_size: int = Field(default=32, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-4, head_lr=1e-3, weight_decay=0.05, warmup_steps=10)
    layer_decay: float = Field(default=0.75, gt=0, le=1)
    grad_clip_norm: float | None = Field(default=1.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: int = Field(default=0, ge=0)
    pixel_decoder: PixelDecoderConfig = PixelDecoderConfig()
    detection_decoder: DetectionDecoderConfig = DetectionDecoderConfig()

    def budget_steps(self, n_train: int, dense: bool = False) -> int:
        """Steps for ``n_train`` training samples: ``epochs`` passes, within [min_steps, max_steps]
        (``dense_min_steps`` for a ``dense`` task: segmentation, detection).

        Examples:
            >>> cfg = FinetuneConfig(epochs=10, min_steps=20, dense_min_steps=200, max_steps=500)
            >>> cfg.budget_steps(40), cfg.budget_steps(320), cfg.budget_steps(10_000)
            (20, 100, 500)
            >>> cfg.budget_steps(40, dense=True)  # segmentation, detection
            200
        """
        floor = self.dense_min_steps if dense else self.min_steps
        steps_per_epoch = math.ceil(n_train / _batch_size(max(n_train, 1), self.batch_size))
        return min(self.max_steps, max(floor, math.ceil(self.epochs * steps_per_epoch)))

    def eval_interval(self, budget: int) -> int:
        """Steps between validations: ``eval_every_steps``, or a tenth of the budget."""
        return self.eval_every_steps or max(1, math.ceil(budget / 10))

    def should_stop(self, step: int, best_step: int, budget: int) -> bool:
        """Early stopping at ``step``: past ``stop_after_fraction`` of the budget, with the best
        score (at ``best_step``; 0 when none) ``patience_fraction`` of the budget old.

        Examples:
            >>> cfg = FinetuneConfig(patience_fraction=0.25, stop_after_fraction=0.5)
            >>> cfg.should_stop(300, 0, 400), cfg.should_stop(200, 0, 400), cfg.should_stop(300, 250, 400)
            (True, True, False)
            >>> cfg.should_stop(100, 0, 400)  # a flat start does not end the run
            False
        """
        warm = step >= self.stop_after_fraction * budget
        return warm and step - best_step >= self.patience_fraction * budget


@dataclass
class FinetuneResult:
    """The model with its best validation weights (eval mode), and when they were reached.

    Attributes:
        model: Encoder, decoder and head of the task.
        model_config: The config that rebuilds ``model`` (for saving it as a checkpoint).
        best_step: Step of the best validation score (0: no validation score was finite).
        best_score: That score.
        steps: Steps trained before stopping.
        budget_steps: The step budget for this training subset.
        evaluations: Validations run.
        curve: ``(step, validation score)`` of every validation, in order.
        never_improved: The validation metric never rose above its first evaluation (with two
            or more evaluations), or was never finite: the model did not learn.
    """

    model: MultiTaskModel
    model_config: ModelConfig
    best_step: int
    best_score: float
    steps: int
    budget_steps: int = 0
    evaluations: int = 0
    never_improved: bool = False
    curve: list[tuple[int, float]] = field(default_factory=list)


def finetune(
    encoder: PretrainedEncoder,
    name: str,
    task: TaskType,
    *,
    train: Sequence[Record],
    val: Sequence[Record],
    metric: str,
    cfg: FinetuneConfig,
    freeze_encoder: bool,
    seed: int,
    preprocessing: Preprocessing | None = None,
    pixels: StudyPixels | None = None,
) -> FinetuneResult:
    """Train encoder (unless frozen), shared decoder and head on one task; keep the best weights.

    Args:
        encoder: Starting encoder; it is copied, never changed.
        name: Task name (names the head).
        task: The task.
        train: Training records (e.g. one data fraction).
        val: Validation records; ``metric`` on them picks the best step.
        metric: A metric of the task, higher is better (e.g. ``balanced_accuracy``, ``mean_dice``).
        cfg: Budget, optimiser, decoders.
        freeze_encoder: Train only decoder and head.
        seed: Seeds the decoder and head initialisation, data order and augmentation.
        preprocessing: The task's channels and fit (default: keep colour, stretch).
        pixels: The task's cached pixels (then ``preprocessing`` is theirs); ``None``: decode
            every sample at every access.

    Returns:
        The best model and its step.
    """
    device = next(encoder.parameters()).device
    tasks = {name: task}
    model, model_cfg = _task_model(encoder, tasks, cfg=cfg, freeze_encoder=freeze_encoder, seed=seed)
    o = cfg.optimizer
    autocast_dtype, scaler = resolve_precision(cfg.precision, device, "finetune.precision")
    optimizers = _task_optimizers(model, name, cfg, scaler)
    batch_size = _batch_size(len(train), cfg.batch_size)
    loader = CyclicTaskLoader(
        name,
        task_dataset(
            task, train, encoder.image_size, task.spec.training_augment(cfg.augment), preprocessing, pixels
        ),
        TaskCollate(name, task),
        batch_size=batch_size,
        seed=seed,
        num_workers=cfg.num_workers,
    )
    val_loader = task_loader(
        name, task, val, encoder.image_size, cfg.batch_size, cfg.num_workers, preprocessing, pixels
    )
    # a task type with a frozen-decoder mode reads a shared decoder that starts from scratch
    budget = cfg.budget_steps(len(train), dense="frozen-decoder" in task.evaluation_modes)
    every = cfg.eval_interval(budget)
    best_score, best_step, best_state = -math.inf, 0, None
    step, curve = 0, []
    # a frozen encoder's maps of an image never change: computed once (each flip, each
    # validation image), looked up at every later step and validation
    memo = memoized_maps(model.encoder.eval()) if freeze_encoder else nullcontext()
    with memo:
        try:
            while step < budget:
                _train_mode(model, freeze_encoder, batch_statistics=len(train) > 1)
                factor = lr_factor(step, budget, warmup_steps=o.warmup_steps, min_lr_ratio=o.min_lr_ratio)
                for optimizer in (optimizers.shared, *optimizers.heads.values()):
                    set_lr(optimizer, factor)
                memory_constant_step(
                    model,
                    tasks,
                    [loader.next_batch().to(device)],
                    optimizers,
                    autocast_dtype=autocast_dtype,
                    grad_clip_norm=cfg.grad_clip_norm,
                )
                step += 1
                if step % every == 0 or step == budget:
                    score = validate(
                        model, tasks, {name: val_loader}, device=device, autocast_dtype=autocast_dtype
                    )[name][metric]
                    curve.append((step, float(score)))
                    if score > best_score:  # NaN (metric undefined on this split) never wins
                        best_score, best_step = score, step
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if cfg.should_stop(step, best_step, budget):
                        break
        finally:  # its workers end also when a step raised
            loader.close()
    _keep_best(model, best_state, what=f"task {name}: validation {metric}")
    never_improved = best_state is None or (len(curve) >= 2 and best_step == min(every, budget))
    return FinetuneResult(
        model.eval(), model_cfg, best_step, best_score, step, budget, len(curve), never_improved, curve
    )


def _task_optimizers(
    model: MultiTaskModel, name: str, cfg: FinetuneConfig, scaler: torch.amp.GradScaler | None
) -> Optimizers:
    """AdamW for encoder and decoder (with ``cfg.layer_decay``) and for the task's head."""
    o = cfg.optimizer
    return Optimizers(
        shared=_shared_optimizer(model, o, cfg.layer_decay),
        heads={name: build_adamw(model.head_parameters(name), o.head_lr or o.lr, o)},
        scaler=scaler,
    )


def _task_model(
    encoder: PretrainedEncoder,
    tasks: dict[str, TaskType],
    *,
    cfg: FinetuneConfig,
    freeze_encoder: bool,
    seed: int,
) -> tuple[MultiTaskModel, ModelConfig]:
    """A copy of ``encoder`` under the task's decoder and head (seeded, on the encoder's device)."""
    device = next(encoder.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model_cfg = encoder.model_config(
            pixel_decoder=cfg.pixel_decoder, detection_decoder=cfg.detection_decoder
        )
        model = build_multitask_model(model_cfg, tasks)
    model.encoder.load_state_dict(encoder.encoder.state_dict())
    model.encoder.requires_grad_(not freeze_encoder)
    return model.to(device), model_cfg


def _keep_best(model: MultiTaskModel, best_state: dict[str, torch.Tensor] | None, *, what: str) -> None:
    """Load the best weights into ``model``; without any (never a finite score), keep the last."""
    if best_state is None:
        return log.warning("%s was never finite; keeping the last weights", what)
    model.load_state_dict(best_state)


def score_model(
    model: MultiTaskModel,
    name: str,
    task: TaskType,
    *,
    records: Sequence[Record],
    image_size: int,
    batch_size: int = 32,
    num_workers: int = 0,
    preprocessing: Preprocessing | None = None,
    pixels: StudyPixels | None = None,
) -> TaskMetrics:
    """The task's metrics of ``model`` on ``records`` (no augmentation; ``preprocessing`` and
    ``pixels`` as in ``finetune``), as the metric accumulator: ``compute()`` gives the metrics,
    ``items()`` the per-item results (for bootstrap intervals and paired comparisons)."""
    device = next(model.parameters()).device
    loader = task_loader(name, task, records, image_size, batch_size, num_workers, preprocessing, pixels)
    kept: dict[str, TaskMetrics] = {}
    validate(model, {name: task}, {name: loader}, device=device, accumulators=kept)
    return kept[name]


def _shared_optimizer(model: MultiTaskModel, o: OptimizerConfig, layer_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable encoder (backbone: one group per block, decayed ``lr``; a ViT's
    feature pyramid at ``lr``) and the decoders, which start from scratch, at ``head_lr``."""
    groups = []
    backbone, pyramid = model.encoder.backbone, model.encoder.pyramid
    if any(p.requires_grad for p in backbone.parameters()):
        groups += param_groups_layer_decay(backbone, weight_decay=o.weight_decay, layer_decay=layer_decay)
    if pyramid is not None and any(p.requires_grad for p in pyramid.parameters()):
        groups += param_groups_weight_decay(pyramid, weight_decay=o.weight_decay)
    for group in groups:
        group["peak_lr"] = o.lr * group.get("lr_scale", 1.0)  # what ``set_lr`` scales
    decoders = nn.ModuleList(m for m in (model.pixel_decoder, model.detection_decoder) if m is not None)
    for group in param_groups_weight_decay(decoders, weight_decay=o.weight_decay):
        groups.append({**group, "peak_lr": o.head_lr or o.lr})
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"]
    return optimizer


def _batch_size(n: int, wanted: int) -> int:
    """At most ``wanted`` (``n`` if need be), never leaving a last batch of one image.

    A one-image batch has no batch statistics for BatchNorm on a 1x1 map (deep levels of small
    inputs), and timm backbones with ImageNet weights keep their BatchNorm.
    """
    for size in range(min(wanted, n), 1, -1):
        if n % size != 1:
            return size
    return n


def _train_mode(model: MultiTaskModel, freeze_encoder: bool, batch_statistics: bool) -> None:
    model.train()
    if freeze_encoder:
        model.encoder.eval()
    if not batch_statistics:  # a single training image: BatchNorm uses its running statistics
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

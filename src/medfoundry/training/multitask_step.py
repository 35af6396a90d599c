"""One shared update of the multi-task model: the memory-constant strategy, and the joint baseline.

Memory-constant [0]: for each task batch, forward through the shared blocks and the task's head,
normalised loss, ``backward()`` at once (which frees that batch's activations), then step the
task's own head optimizer and free its gradients. The shared gradients accumulate over all task
batches of the step; the shared optimizer steps once at the end. Peak memory is parameters +
one gradient buffer + optimizer state + the activations of ONE task batch, whatever the number
of tasks.

Joint (``strategy: joint``, a baseline for the memory benchmark only): sum all task losses and
call one ``backward()``, which keeps every task's graph alive at once.

Multi-process runs (``dist``): every rank runs the same tasks in the same order on its slice of
each global batch; a head's gradient is averaged over ranks right after its backward, the
shared gradient once per step (see ``training.distributed``).

Non-finite guard: a batch whose loss is NaN/inf (on any rank) is skipped before its backward,
and leaves no trace: its forward pass may already have updated BatchNorm running statistics
(encoders built with ``use_groupnorm: false``) and drawn random numbers, so those buffers and
the generators' states are put back as they were; a
head whose gradient is non-finite is not stepped; a shared gradient that is non-finite (which
can only come from a finite loss whose backward overflowed) skips the whole shared update, so
nothing non-finite ever reaches the weights, the buffers or the optimizer states.

[0] Schäfer et al., Nature Computational Science 4, 495-509 (2024).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.tasks.task_type import TaskType
from medfoundry.training.distributed import DistributedContext
from medfoundry.training.task_batch import TaskBatch

__all__ = ["Optimizers", "StepResult", "joint_step", "memory_constant_step"]

SINGLE_PROCESS = DistributedContext()


@dataclass
class Optimizers:
    """The shared optimizer, one optimizer per head, and the fp16 loss scaler (if any)."""

    shared: torch.optim.Optimizer
    heads: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler | None = None


@dataclass
class StepResult:
    """What one shared step did.

    Attributes:
        losses: Task -> mean normalised loss of its finite batches in this step.
        batch_losses: Task -> the loss of each of its finite batches (mean over ranks).
        nonfinite: Tasks whose batch had a non-finite loss and was skipped.
        shared_updated: Whether the shared optimizer stepped.
        grad_norm: Shared gradient norm before clipping (NaN when there was no gradient).
        images: Images processed.
    """

    losses: dict[str, float] = field(default_factory=dict)
    nonfinite: list[str] = field(default_factory=list)
    shared_updated: bool = False
    grad_norm: float = math.nan
    images: int = 0
    batch_losses: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def finish(self, grad_norm: float, shared_updated: bool) -> None:
        """Set the per-task means and what the shared step did."""
        self.losses = {task: sum(v) / len(v) for task, v in self.batch_losses.items()}
        self.grad_norm, self.shared_updated = grad_norm, shared_updated


def memory_constant_step(
    model: MultiTaskModel,
    tasks: Mapping[str, TaskType],
    batches: Iterable[TaskBatch],
    optimizers: Optimizers,
    *,
    autocast_dtype: torch.dtype | None = None,
    grad_clip_norm: float | None = None,
    dist: DistributedContext = SINGLE_PROCESS,
) -> StepResult:
    """Per-task forward + immediate backward; one shared optimizer step at the end.

    Args:
        model: The multi-task model, in training mode, on the batches' device.
        tasks: Task name -> task (for the loss).
        batches: The step's batches (usually one per task); a lazy iterable keeps only one
            task's batch in memory at a time.
        optimizers: Shared and per-head optimizers.
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` for mixed precision, else ``None``.
        grad_clip_norm: Clip shared and head gradient norms to this value.
        dist: The processes of a multi-process run (default: this process alone).

    Returns:
        Per-task losses (mean over ranks) and what was updated.
    """
    result = StepResult()
    for batch in batches:
        loss = _finite_loss(model, tasks, batch, autocast_dtype, dist, result)
        if loss is None:
            continue
        _scaled(loss, optimizers.scaler).backward()
        del loss  # the graph is gone; drop what is left of it before the next task
        _step_head(optimizers, batch.task, model.head_parameters(batch.task), grad_clip_norm, dist)
    result.finish(*_step_shared(optimizers, model.shared_parameters(), grad_clip_norm, dist))
    return result


def joint_step(
    model: MultiTaskModel,
    tasks: Mapping[str, TaskType],
    batches: Iterable[TaskBatch],
    optimizers: Optimizers,
    *,
    autocast_dtype: torch.dtype | None = None,
    grad_clip_norm: float | None = None,
    dist: DistributedContext = SINGLE_PROCESS,
) -> StepResult:
    """Sum of all task losses, one backward (every task's graph alive at once). Baseline only."""
    result = StepResult()
    losses = []
    for batch in batches:
        loss = _finite_loss(model, tasks, batch, autocast_dtype, dist, result)
        if loss is not None:
            losses.append(loss)
    if losses:
        _scaled(torch.stack(losses).sum(), optimizers.scaler).backward()
    for task in dict.fromkeys(result.batch_losses):
        _step_head(optimizers, task, model.head_parameters(task), grad_clip_norm, dist)
    result.finish(*_step_shared(optimizers, model.shared_parameters(), grad_clip_norm, dist))
    return result


def _finite_loss(
    model: MultiTaskModel,
    tasks: Mapping[str, TaskType],
    batch: TaskBatch,
    autocast_dtype: torch.dtype | None,
    dist: DistributedContext,
    result: StepResult,
) -> torch.Tensor | None:
    """The batch's normalised loss, or ``None`` (recorded) when it is non-finite on any rank, in
    which case what its forward pass changed is put back: BatchNorm statistics and the random
    number streams it drew from (dropout, drop-path, masking)."""
    device = batch.images.device
    saved = _running_buffers(model)
    rng = torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    with _autocast(device, autocast_dtype):
        loss = tasks[batch.task].loss(model(batch.task, batch.images), batch.targets)
    finite, value = dist.agree_finite(loss.item())
    if not finite:
        with torch.no_grad():
            for buffer, copy in saved:
                buffer.copy_(copy)
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1], device)
        result.nonfinite.append(batch.task)
        return None
    result.batch_losses.setdefault(batch.task, []).append(value)
    result.images += len(batch)
    return loss


def _running_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of the buffers a training-mode forward pass updates (BatchNorm statistics)."""
    return [
        (buffer, buffer.clone())
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.training
        for buffer in module.buffers(recurse=False)
    ]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _scaled(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    return scaler.scale(loss) if scaler is not None else loss


def _step_head(
    optimizers: Optimizers,
    task: str,
    params: list[nn.Parameter],
    clip: float | None,
    dist: DistributedContext,
) -> None:
    """Average over ranks, unscale, clip and step one head right after its backward; free its gradients."""
    optimizer = optimizers.heads[task]
    dist.average_gradients(params)
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        if optimizers.scaler is not None:
            # the shared scaler keeps its own bookkeeping for the shared optimizer only
            torch._foreach_mul_(grads, 1.0 / optimizers.scaler.get_scale())
        if math.isfinite(_norm_and_clip(params, grads, clip)):
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _step_shared(
    optimizers: Optimizers, params: list[nn.Parameter], clip: float | None, dist: DistributedContext
) -> tuple[float, bool]:
    """Average over ranks, clip and step the shared optimizer unless the gradient is non-finite."""
    optimizer, scaler = optimizers.shared, optimizers.scaler
    if not any(p.grad is not None for p in params):
        return math.nan, False
    dist.average_gradients(params)
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = _norm_and_clip(params, [p.grad for p in params if p.grad is not None], clip)
    updated = math.isfinite(norm)
    if scaler is not None:
        scaler.step(optimizer)  # skips by itself when the unscaled gradient is non-finite
        scaler.update()
    elif updated:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm, updated


def _norm_and_clip(params: list[nn.Parameter], grads: list[torch.Tensor], clip: float | None) -> float:
    """The total gradient norm (for the non-finite check), scaling gradients only when it exceeds
    ``clip``: ``clip_grad_norm_`` would also rewrite every gradient with a factor of exactly 1."""
    norm = nn.utils.get_total_norm(grads)
    if clip and torch.isfinite(norm) and norm > clip:
        nn.utils.clip_grads_with_norm_(params, clip, norm)
    return float(norm)

"""Recipe: multi-task pretraining with memory flat in the number of tasks (UMedPT [0]).

``run(cfg)`` reads top to bottom: check the tasks and their data, build the model and
optimizers, then loop over shared steps (round-robin over tasks, per-task backward), validating
per task, logging, and saving resumable checkpoints. Everything that can fail on user input
fails before the run folder is created.

The same code runs as one process or as several under ``torchrun`` (one per GPU, or gloo
processes on a CPU): each rank trains on its slice of every global batch, gradients are averaged
where the loop needs them (``training.distributed``), and rank 0 alone writes files.

[0] Schäfer et al., "Overcoming data scarcity in biomedical imaging with a foundational
    multi-task model", Nature Computational Science 4, 495-509 (2024).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from medfoundry.data import (
    AugmentConfig,
    TaskData,
    TaskDataset,
    discard_new_caches,
    load_task_data,
)
from medfoundry.errors import ConfigError, DataError
from medfoundry.models.build import build_multitask_model
from medfoundry.recipes.pretrain_config import PretrainConfig
from medfoundry.tasks import TaskType, build_task, with_classes
from medfoundry.training.checkpoint import save_checkpoint
from medfoundry.training.checkpoint_config import checkpoint_config
from medfoundry.training.device import resolve_device, resolve_precision
from medfoundry.training.distributed import DistributedContext, init_distributed
from medfoundry.training.metrics_log import MetricsLog
from medfoundry.training.multitask_step import Optimizers, joint_step, memory_constant_step
from medfoundry.training.optim import build_adamw, lr_factor, set_lr
from medfoundry.training.progress import TrainingProgress
from medfoundry.training.reconstruction_preview import ReconstructionPreviews
from medfoundry.training.rng import rank_seed, seed_everything
from medfoundry.training.run_folder import RunStart, check_run_folder, last_checkpoint, prepare_run_folder
from medfoundry.training.task_batch import TaskCollate
from medfoundry.training.task_loader import CyclicTaskLoader
from medfoundry.training.task_sampler import RoundRobinSampler
from medfoundry.training.trainer_state import capture_trainer_state, restore_trainer_state
from medfoundry.training.validation import validate

__all__ = ["NonFiniteLossError", "run"]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced non-finite losses too many steps in a row."""


def run(cfg: PretrainConfig, resume: bool = False) -> Path:
    """Pretrain the shared encoder on all tasks of ``cfg``; returns the run folder.

    Args:
        cfg: The run's configuration.
        resume: Continue the run in ``cfg.run_dir`` from its last checkpoint. The config must be
            the one the run was started with (the number of processes may differ). Without it,
            a folder that holds this very run (same config) is continued too, so the command
            that started a killed run also finishes it (``training.run_folder``).

    Raises:
        ConfigError, DataError: bad configuration, data, run folder or checkpoint, before
            anything is written (caches included).
        NonFiniteLossError: ``max_consecutive_nonfinite`` steps in a row had a non-finite loss.
    """
    t = cfg.training
    # --- everything that can fail on user input, before writing anything ---
    cfg = _with_classes(cfg)
    tasks: dict[str, TaskType] = {spec.name: build_task(spec) for spec in cfg.tasks}
    device = resolve_device(t.device)
    autocast_dtype, scaler = resolve_precision(t.precision, device)
    dist = init_distributed(device, t.distributed_timeout_s)
    device = dist.device
    batch_sizes = {spec.name: spec.batch_size or cfg.data.batch_size for spec in cfg.tasks}
    _check_batch_sizes(batch_sizes, dist)
    run_dir = Path(cfg.run_dir)
    resolved = cfg.model_dump(mode="json")
    # the run folder and its checkpoint are checked before the slow data check fills the cache
    start = _share_start(dist, dist.run_on_main(lambda: check_run_folder(run_dir, resolved, resume)))
    seed_everything(cfg.seed)  # the same initial weights on every rank
    model = build_multitask_model(cfg.model, tasks)
    if dist.rank:
        torch.manual_seed(rank_seed(cfg.seed, dist.rank))  # in-model randomness differs per rank
    data = _load_data_on_every_rank(cfg, tasks, dist)  # last: decoding into the cache is the slow check
    try:
        dist.run_on_main(lambda: prepare_run_folder(run_dir, resolved, start))
    except ConfigError:  # the folder passed its checks but cannot be made after all
        discard_new_caches(data.values())
        raise
    resume = start == "resume"
    counts = {name: {split: len(r) for split, r in d.records.items()} for name, d in data.items()}

    # --- model, optimizers, data streams ---
    model.to(device)
    if t.use_channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = t.enable_cudnn_benchmark
    head_lr = t.optimizer.head_lr or t.optimizer.lr
    optimizers = Optimizers(
        shared=build_adamw(model.shared_parameters(), t.optimizer.lr, t.optimizer),
        heads={name: build_adamw(model.head_parameters(name), head_lr, t.optimizer) for name in tasks},
        scaler=scaler,
    )
    state = (
        restore_trainer_state(
            last_checkpoint(run_dir), model, optimizers, dist=dist, device=device, seed=cfg.seed
        )
        if resume
        else None
    )
    if t.enable_compile:
        model.encoder.compile()  # in place: parameter names, and so checkpoints, stay the same
    consumed = state["sampler"] if state else {}
    size = cfg.model.image_size
    pin = device.type == "cuda"
    loaders = {
        spec.name: CyclicTaskLoader(
            spec.name,
            _dataset(data[spec.name], "train", tasks[spec.name], size, cfg.data.augment),
            TaskCollate(spec.name, tasks[spec.name]),
            batch_size=batch_sizes[spec.name],
            seed=cfg.seed,
            num_workers=cfg.data.num_workers,
            start_batch=consumed.get(spec.name, 0),
            pin_memory=pin,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        for spec in cfg.tasks
    }
    sampler = RoundRobinSampler(loaders, t.rounds_per_shared_step)
    val_loaders = {  # every rank validates the whole split (identical results), rank 0 reports
        spec.name: DataLoader(
            _dataset(data[spec.name], "val", tasks[spec.name], size, AugmentConfig.off()),
            batch_size=batch_sizes[spec.name],
            collate_fn=TaskCollate(spec.name, tasks[spec.name]),
            num_workers=cfg.data.num_workers,
            pin_memory=pin,
        )
        for spec in cfg.tasks
    }
    # masked-image tasks: grids of fixed validation images, original / masked / reconstruction
    val_datasets = {name: loader.dataset for name, loader in val_loaders.items()}
    previews = ReconstructionPreviews(model, val_datasets, run_dir / "previews")
    total_steps = t.max_steps or t.epochs * sampler.steps_per_epoch
    step_fn = memory_constant_step if t.strategy == "memory_constant" else joint_step
    step = state["step"] if state else 0
    best = state["best_val_loss"] if state else math.inf
    nonfinite_streak = state["nonfinite_streak"] if state else 0
    metrics_log = MetricsLog(run_dir, resume_step=step if resume else None) if dist.is_main else None
    log.info(
        "%d tasks, %d steps (%d per epoch), %d params shared, device %s, %d process(es)",
        len(tasks),
        total_steps,
        sampler.steps_per_epoch,
        sum(p.numel() for p in model.shared_parameters()),
        device,
        dist.world_size,
    )

    def validate_and_keep_best(step: int, best: float) -> float:
        results = validate(model, tasks, val_loaders, device=device, autocast_dtype=autocast_dtype)
        mean_loss = sum(r["loss"] for r in results.values()) / len(results)
        if metrics_log is not None:
            flat = {f"{task}/{k}": v for task, r in results.items() for k, v in r.items()}
            metrics_log.log(step, "val", {**flat, "mean_loss": mean_loss})
            progress.print(_val_line(step, results, mean_loss))
            if mean_loss < best:
                metrics = {"val": results, "val_mean_loss": mean_loss}
                save_checkpoint(
                    run_dir / "checkpoints" / "best", model, _checkpoint_config(cfg, step, metrics, counts)
                )
        return min(best, mean_loss)

    # --- the loop ---
    window: dict[str, list[float]] = {}
    window_images, window_seconds = 0, 0.0  # training time only: validation and saving excluded
    model.train()
    progress_bar = TrainingProgress(
        total_steps, start_step=step, enabled=cfg.enable_progress and dist.is_main
    )
    with dist.failures_reported(), progress_bar as progress:
        if not resume:
            best = validate_and_keep_best(0, best)  # the untrained baseline of every task
        while step < total_steps:
            factor = lr_factor(
                step,
                total_steps,
                warmup_steps=t.optimizer.warmup_steps,
                min_lr_ratio=t.optimizer.min_lr_ratio,
            )
            for optimizer in (optimizers.shared, *optimizers.heads.values()):
                set_lr(optimizer, factor)
            started = time.perf_counter()
            # batches are fetched lazily: one task's batch in memory at a time
            batches = (b.to(device, pin, t.use_channels_last) for b in sampler.next_step())
            result = step_fn(
                model,
                tasks,
                batches,
                optimizers,
                autocast_dtype=autocast_dtype,
                grad_clip_norm=t.grad_clip_norm,
                dist=dist,
            )
            window_seconds += time.perf_counter() - started
            step += 1

            nonfinite_streak = nonfinite_streak + 1 if result.nonfinite else 0
            if result.nonfinite:
                _report_nonfinite(
                    step,
                    result.nonfinite,
                    optimizers,
                    nonfinite_streak,
                    t.max_consecutive_nonfinite,
                    progress,
                )
            for task, value in result.losses.items():
                window.setdefault(task, []).append(value)
            window_images += result.images * dist.world_size

            if metrics_log is not None and (step % t.log_every_steps == 0 or step == total_steps):
                means = {task: sum(v) / len(v) for task, v in window.items()}
                images_per_s = window_images / max(window_seconds, 1e-9)
                metrics_log.log(
                    step,
                    "train",
                    {
                        **{f"loss/{task}": v for task, v in means.items()},
                        "lr": optimizers.shared.param_groups[0]["lr"],
                        "grad_norm": result.grad_norm,
                        "images_per_s": images_per_s,
                        "epoch": step / sampler.steps_per_epoch,
                    },
                )
                progress.update(step, means, images_per_s)
                window, window_images, window_seconds = {}, 0, 0.0

            epoch_end = step % sampler.steps_per_epoch == 0
            if epoch_end or step == total_steps or (t.val_every_steps and step % t.val_every_steps == 0):
                best = validate_and_keep_best(step, best)
            preview_due = t.preview_every_steps and step % t.preview_every_steps == 0
            if previews and dist.is_main and (preview_due or step == total_steps):
                previews.save(model, step)
            if epoch_end or step == total_steps or step % t.checkpoint_every_steps == 0:
                trainer_state = capture_trainer_state(
                    step,
                    best_val_loss=best,
                    nonfinite_streak=nonfinite_streak,
                    consumed=sampler.state(),
                    optimizers=optimizers,
                    dist=dist,
                    device=device,
                )
                if dist.is_main:
                    save_checkpoint(
                        last_checkpoint(run_dir),
                        model,
                        _checkpoint_config(cfg, step, None, counts),
                        trainer_state=trainer_state,
                    )
    sampler.close()
    if metrics_log is not None:
        metrics_log.close()
    skipped = {name: len(d.skipped) for name, d in data.items() if d.skipped}
    if skipped:
        log.warning(
            "samples left out (data.on_error: skip): %s", ", ".join(f"{n}: {c}" for n, c in skipped.items())
        )
    dist.close()
    return run_dir


def _check_batch_sizes(batch_sizes: dict[str, int], dist: DistributedContext) -> None:
    bad = [f"{task} ({size})" for task, size in batch_sizes.items() if size % dist.world_size]
    if bad:
        raise ConfigError(
            f"batch sizes must be divisible by the {dist.world_size} processes so that every process gets an "
            f"equal slice; not divisible: {', '.join(bad)} (data.batch_size or the task's batch_size)"
        )


def _with_classes(cfg: PretrainConfig) -> PretrainConfig:
    """The config with every task's classes: declared, or read from its data."""
    return cfg.model_copy(update={"tasks": [with_classes(spec) for spec in cfg.tasks]})


def _load_data(cfg: PretrainConfig, tasks: dict[str, TaskType]) -> dict[str, TaskData]:
    """Every task's records, split and cached; the problems of all tasks are reported together."""
    data, problems = {}, []
    for spec in cfg.tasks:
        task = tasks[spec.name]
        try:
            data[spec.name] = load_task_data(
                spec,
                task.target,
                seed=cfg.seed,
                val_fraction=cfg.data.val_fraction,
                size=cfg.model.image_size,
                cache=cfg.data.cache_settings(),
                ignore_index=task.ignore_index,
                on_error=cfg.data.on_error,
            )
        except DataError as e:
            problems += e.problems
            continue
        for line in data[spec.name].skipped:
            log.warning("task '%s': left out: %s", spec.name, line)
        if data[spec.name].notes:
            log.info(
                "task '%s': %d file(s) changed or passed over when read (validate-data lists them)",
                spec.name,
                len(data[spec.name].notes),
            )
    if problems:
        discard_new_caches(data.values())  # a failed start leaves no cache behind
        raise DataError(problems)
    return data


def _load_data_on_every_rank(
    cfg: PretrainConfig, tasks: dict[str, TaskType], dist: DistributedContext
) -> dict[str, TaskData]:
    """Rank 0 checks the data and fills the cache first; the other ranks then read the cache."""
    on_main = dist.run_on_main(lambda: _load_data(cfg, tasks))
    return on_main if on_main is not None else _load_data(cfg, tasks)


def _dataset(data: TaskData, split: str, task: TaskType, size: int, augment: AugmentConfig) -> TaskDataset:
    prepared = data.prepared[split]
    return TaskDataset(prepared.records, task.target, size, augment=augment, arrays=prepared.arrays)


def _checkpoint_config(
    cfg: PretrainConfig, step: int, metrics: dict[str, Any] | None, counts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    return checkpoint_config(
        cfg.model,
        cfg.tasks,
        seed=cfg.seed,
        strategy=cfg.training.strategy,
        step=step,
        metrics=metrics,
        sample_counts=counts,
    )


def _report_nonfinite(
    step: int, tasks: list[str], optimizers: Optimizers, streak: int, limit: int, progress: TrainingProgress
) -> None:
    lr = optimizers.shared.param_groups[0]["lr"]
    message = f"step {step}: non-finite loss in task(s) {', '.join(tasks)} (lr {lr:.3g}); batch skipped"
    log.warning(message)
    progress.print(f"[yellow]{message}")
    if streak >= limit:
        raise NonFiniteLossError(
            f"{message}; {streak} steps in a row had non-finite losses, stopping. "
            "Lower training.optimizer.lr or check the data of these tasks."
        )


def _share_start(dist: DistributedContext, start: RunStart | None) -> RunStart:
    """Rank 0 checked the run folder; every rank learns how the run starts."""
    starts: tuple[RunStart, ...] = ("new", "resume", "restart")
    index = dist.broadcast_int(starts.index(start) if start is not None else 0)
    return starts[index]


def _val_line(step: int, results: dict[str, dict[str, float]], mean_loss: float) -> str:
    parts = []
    for task, r in results.items():
        shown = [f"loss {r['loss']:.3f}"] + [
            f"{k} {v:.3f}" for k, v in r.items() if k != "loss" and "/" not in k and math.isfinite(v)
        ]
        parts.append(f"{task}: {', '.join(shown)}")
    return f"[cyan]val @ step {step}[/] mean loss {mean_loss:.3f} | " + " | ".join(parts)

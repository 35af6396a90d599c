"""Everything multi-task pretraining sets up before its loop, in the order that keeps a failed
start from writing anything: every check of the user's input (config, run folder, checkpoint,
data), then the model, optimizers, data streams and logs, restored from the last checkpoint
when the run continues. ``recipes.pretrain.job.run`` reads the loop; this module builds
what the loop runs on (``PretrainRun``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
from medfoundry.evaluation.transfer_monitor import (
    TransferMonitor,
    check_monitor_levels,
    load_transfer_monitor,
)
from medfoundry.models.build import build_multitask_model
from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.recipes.pretrain.config import PretrainConfig, TrainingConfig
from medfoundry.tasks import TaskType, build_task, with_classes
from medfoundry.training.device import resolve_device, resolve_precision
from medfoundry.training.distributed import DistributedContext, init_distributed
from medfoundry.training.metrics_log import MetricsLog
from medfoundry.training.multitask_step import Optimizers, StepResult, joint_step, memory_constant_step
from medfoundry.training.optim import build_adamw
from medfoundry.training.reconstruction_preview import ReconstructionPreviews
from medfoundry.training.rng import rank_seed, seed_everything
from medfoundry.training.run_folder import RunStart, check_run_folder, last_checkpoint, prepare_run_folder
from medfoundry.training.task_batch import TaskCollate
from medfoundry.training.task_loader import CyclicTaskLoader
from medfoundry.training.task_sampler import RoundRobinSampler
from medfoundry.training.trainer_state import restore_trainer_state

__all__ = ["PretrainRun", "prepare_run"]

log = logging.getLogger(__name__)


@dataclass
class PretrainRun:
    """What the training loop runs on, and the loop's own state (``step``, ``best_val_loss``,
    ``best_transfer``, ``nonfinite_streak``: restored when the run continues).

    ``monitor`` (the transfer monitor) exists on rank 0 only: it scores, logs and keeps ``best``
    there while the other ranks go on to the next step's collectives and wait.
    """

    cfg: PretrainConfig
    run_dir: Path
    tasks: dict[str, TaskType]
    data: dict[str, TaskData]
    sample_counts: dict[str, dict[str, int]]
    dist: DistributedContext
    device: torch.device
    autocast_dtype: torch.dtype | None
    model: MultiTaskModel
    optimizers: Optimizers
    step_fn: Callable[..., StepResult]
    sampler: RoundRobinSampler
    val_loaders: Mapping[str, DataLoader[Any]]
    previews: ReconstructionPreviews
    metrics_log: MetricsLog | None
    total_steps: int
    resumed: bool
    monitor: TransferMonitor | None = None
    step: int = 0
    best_val_loss: float = math.inf
    best_transfer: float = -math.inf
    nonfinite_streak: int = 0


def prepare_run(cfg: PretrainConfig, resume: bool) -> PretrainRun:
    """Check everything, then build the run (see ``pretrain.job.run`` for ``resume``).

    Raises:
        ConfigError, DataError: bad configuration, data, run folder or checkpoint, before
            anything is written (caches included).
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
    monitor = dist.run_on_main(lambda: _load_monitor(cfg, model))  # in memory: nothing to undo
    data = _load_data_on_every_rank(cfg, tasks, dist)  # last: decoding into the cache is the slow check
    try:
        dist.run_on_main(lambda: prepare_run_folder(run_dir, resolved, start))
    except ConfigError:  # the folder passed its checks but cannot be made after all
        discard_new_caches(data.values())
        raise
    resumed = start == "resume"

    # --- model, optimizers, data streams ---
    optimizers, state = _ready_model(cfg, model, tasks, scaler=scaler, dist=dist, resumed=resumed)
    pin = device.type == "cuda"
    consumed = state["sampler"] if state else {}
    sampler = _train_sampler(cfg, tasks, data, batch_sizes=batch_sizes, consumed=consumed, dist=dist, pin=pin)
    val_loaders = _val_loaders(cfg, tasks, data, batch_sizes=batch_sizes, pin=pin)
    # masked-image tasks: grids of fixed validation images, original / masked / reconstruction
    val_datasets = {name: loader.dataset for name, loader in val_loaders.items()}
    step = state["step"] if state else 0
    run = PretrainRun(
        cfg=cfg,
        run_dir=run_dir,
        tasks=tasks,
        data=data,
        sample_counts={name: {split: len(r) for split, r in d.records.items()} for name, d in data.items()},
        dist=dist,
        device=device,
        autocast_dtype=autocast_dtype,
        model=model,
        optimizers=optimizers,
        step_fn=memory_constant_step if t.strategy == "memory_constant" else joint_step,
        sampler=sampler,
        val_loaders=val_loaders,
        previews=ReconstructionPreviews(model, val_datasets, run_dir / "previews"),
        metrics_log=MetricsLog(run_dir, resume_step=step if resumed else None) if dist.is_main else None,
        total_steps=t.max_steps or t.epochs * sampler.steps_per_epoch,
        resumed=resumed,
        monitor=monitor,
        step=step,
        best_val_loss=state["best_val_loss"] if state else math.inf,
        best_transfer=state.get("best_transfer", -math.inf) if state else -math.inf,
        nonfinite_streak=state["nonfinite_streak"] if state else 0,
    )
    _log_start(run)
    return run


def _ready_model(
    cfg: PretrainConfig,
    model: MultiTaskModel,
    tasks: dict[str, TaskType],
    *,
    scaler: torch.amp.GradScaler | None,
    dist: DistributedContext,
    resumed: bool,
) -> tuple[Optimizers, dict[str, Any] | None]:
    """Place ``model`` on the run's device, build its optimizers and, when ``resumed``, restore
    both with the trainer state of the last checkpoint (which is returned)."""
    t, device = cfg.training, dist.device
    model.to(device)
    if t.use_channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = t.enable_cudnn_benchmark
    optimizers = _optimizers(model, tasks, t, scaler)
    state = None
    if resumed:
        checkpoint = last_checkpoint(Path(cfg.run_dir))
        state = restore_trainer_state(checkpoint, model, optimizers, dist=dist, device=device, seed=cfg.seed)
    if t.enable_compile:
        model.encoder.compile()  # in place: parameter names, and so checkpoints, stay the same
    return optimizers, state


def _optimizers(
    model: MultiTaskModel, tasks: dict[str, TaskType], t: TrainingConfig, scaler: torch.amp.GradScaler | None
) -> Optimizers:
    """AdamW over the shared parameters at ``lr`` and one per head at ``head_lr``."""
    head_lr = t.optimizer.head_lr or t.optimizer.lr
    return Optimizers(
        shared=build_adamw(model.shared_parameters(), t.optimizer.lr, t.optimizer),
        heads={name: build_adamw(model.head_parameters(name), head_lr, t.optimizer) for name in tasks},
        scaler=scaler,
    )


def _train_sampler(
    cfg: PretrainConfig,
    tasks: dict[str, TaskType],
    data: dict[str, TaskData],
    *,
    batch_sizes: dict[str, int],
    consumed: dict[str, int],
    dist: DistributedContext,
    pin: bool,
) -> RoundRobinSampler:
    """Every task's endless training stream (continuing after ``consumed`` batches), in turn."""
    loaders = {
        spec.name: CyclicTaskLoader(
            spec.name,
            _dataset(
                data[spec.name],
                "train",
                tasks[spec.name],
                cfg.model.image_size,
                spec.training_augment(cfg.data.augment),
            ),
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
    return RoundRobinSampler(loaders, cfg.training.rounds_per_shared_step)


def _val_loaders(
    cfg: PretrainConfig,
    tasks: dict[str, TaskType],
    data: dict[str, TaskData],
    *,
    batch_sizes: dict[str, int],
    pin: bool,
) -> dict[str, DataLoader[Any]]:
    """Every rank validates the whole split (identical results); rank 0 reports."""
    size = cfg.model.image_size
    return {
        spec.name: DataLoader(
            _dataset(data[spec.name], "val", tasks[spec.name], size, AugmentConfig.off()),
            batch_size=batch_sizes[spec.name],
            collate_fn=TaskCollate(spec.name, tasks[spec.name]),
            num_workers=cfg.data.num_workers,
            pin_memory=pin,
        )
        for spec in cfg.tasks
    }


def _log_start(run: PretrainRun) -> None:
    log.info(
        "%d tasks, %d steps (%d per epoch), %d params shared, device %s, %d process(es)",
        len(run.tasks),
        run.total_steps,
        run.sampler.steps_per_epoch,
        sum(p.numel() for p in run.model.shared_parameters()),
        run.device,
        run.dist.world_size,
    )


def _load_monitor(cfg: PretrainConfig, model: MultiTaskModel) -> TransferMonitor | None:
    """The transfer monitor with its held-out images in memory, or ``None`` when it is off."""
    monitor = cfg.training.transfer_monitor
    if monitor is None:
        return None
    encoder = cfg.model.encoder.name
    check_monitor_levels(monitor.probe.feature_levels, len(model.encoder.feature_info), encoder)
    return load_transfer_monitor(monitor, image_size=cfg.model.image_size, num_workers=cfg.data.num_workers)


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


def _share_start(dist: DistributedContext, start: RunStart | None) -> RunStart:
    """Rank 0 checked the run folder; every rank learns how the run starts."""
    starts: tuple[RunStart, ...] = ("new", "resume", "restart")
    index = dist.broadcast_int(starts.index(start) if start is not None else 0)
    return starts[index]

"""The one config of the multi-task pretraining recipe (``medfoundry pretrain CONFIG.yaml``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from medfoundry.config_io import (
    IsPath,
    apply_overrides,
    load_yaml,
    path_keys,
    resolve_relative_paths,
    validate_config,
)
from medfoundry.data.augment import AugmentConfig
from medfoundry.data.cache import CacheSettings
from medfoundry.errors import ConfigError
from medfoundry.evaluation.transfer_monitor import TransferMonitorConfig
from medfoundry.models.config import ModelConfig
from medfoundry.tasks.database import is_source_path, read_tasks
from medfoundry.tasks.spec import DatabaseTask, check_unique_names
from medfoundry.training.optim import OptimizerConfig

__all__ = [
    "DataConfig",
    "PretrainConfig",
    "TrainingConfig",
    "default_cache_dir",
    "load_pretrain_config",
    "read_config",
    "read_monitor_tasks",
    "read_tasks",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Frozen):
    """How task data is cached and fed.

    Args:
        batch_size: Default images per batch of each task (a task's ``batch_size`` overrides).
        num_workers: DataLoader worker processes per task (0: load in the main process); also
            the processes that decode while the cache is built.
        val_fraction: Share of a task's unsplit groups used for validation (a task's
            ``split.val_fraction`` overrides).
        augment: Training augmentation of images with their masks and boxes (``true``: flips;
            see ``medfoundry.data.AugmentConfig`` for rotations, affine, crops, jitter).
        enable_cache: Keep decoded samples in ``cache_dir`` across runs; ``false`` decodes once
            per run into memory.
        cache_dir: Cache folder; default ``$XDG_CACHE_HOME/medfoundry`` (``~/.cache/medfoundry``).
        cache_validation: How a cached file is recognised as unchanged: ``stat`` (size and
            modification time) or ``content`` (SHA-256 of its bytes; reads every file).
        on_error: ``raise``: a bad row, file or sample stops the run (all of them listed);
            ``skip``: they are left out, counted and listed at the end.
    """

    batch_size: int = Field(default=16, ge=1)
    num_workers: int = Field(default=0, ge=0)
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    enable_cache: bool = True
    cache_dir: Path | None = None
    cache_validation: Literal["stat", "content"] = "stat"
    on_error: Literal["raise", "skip"] = "raise"

    def cache_settings(self) -> CacheSettings:
        """Where samples are cached (``cache_dir`` resolved)."""
        if not self.enable_cache:
            return CacheSettings(None, self.cache_validation, self.num_workers)
        return CacheSettings(self.cache_dir or default_cache_dir(), self.cache_validation, self.num_workers)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/medfoundry``, or ``~/.cache/medfoundry``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medfoundry"


class TrainingConfig(_Frozen):
    """The training loop.

    Args:
        strategy: ``memory_constant`` (per-task backward, memory flat in the number of tasks)
            or ``joint`` (sum of losses, one backward; a baseline for benchmarks only).
        epochs: Epochs; one epoch is as many rounds as the largest task has batches.
        max_steps: Fixed budget of shared steps instead of ``epochs``.
        rounds_per_shared_step: Batches of each task per shared optimizer step.
        optimizer: AdamW and its schedule (warm-up, cosine).
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast + loss scaling; CUDA only).
        grad_clip_norm: Clip gradient norms (shared and per head); ``None`` disables.
        max_consecutive_nonfinite: Stop after this many steps in a row with a non-finite loss.
        checkpoint_every_steps: Save the resumable ``last`` checkpoint this often (and at
            every epoch end and the end of the run).
        val_every_steps: Validate this often; ``None``: at every epoch end.
        log_every_steps: Write training metrics this often.
        preview_every_steps: Save reconstruction previews of masked-image tasks this often
            (``RUN/previews``); they are always saved at the end of the run.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``. Under torchrun
            each process takes the GPU of its local rank.
        distributed_timeout_s: Multi-process runs: how long joining the group, and any
            collective, may wait for the other processes before failing instead of hanging.
        enable_compile: Compile the encoder with ``torch.compile`` (GPU; the first steps are slow).
        use_channels_last: Channels-last memory layout for model and images (faster convolutions
            on tensor-core GPUs).
        enable_cudnn_benchmark: Let cuDNN pick the fastest convolution algorithms (GPU).
        transfer_monitor: Score frozen features on held-out tasks during the run (at step 0,
            every ``every_steps`` and at the last step; ``evaluation.transfer_monitor``);
            ``None``: off.
        select_best_by: What ``checkpoints/best`` is the best of: ``loss`` (the lowest mean
            validation loss of the pretraining tasks) or ``transfer`` (the highest mean score of
            the transfer monitor on the held-out tasks' validation splits; needs
            ``transfer_monitor``).
    """

    strategy: Literal["memory_constant", "joint"] = "memory_constant"
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    rounds_per_shared_step: int = Field(default=1, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_clip_norm: float | None = Field(default=1.0, gt=0)
    max_consecutive_nonfinite: int = Field(default=20, ge=1)
    checkpoint_every_steps: int = Field(default=100, ge=1)
    val_every_steps: int | None = Field(default=None, ge=1)
    log_every_steps: int = Field(default=10, ge=1)
    preview_every_steps: int | None = Field(default=None, ge=1)
    device: str = "auto"
    distributed_timeout_s: float = Field(default=600.0, gt=0)
    enable_compile: bool = False
    use_channels_last: bool = False
    enable_cudnn_benchmark: bool = True
    transfer_monitor: TransferMonitorConfig | None = None
    select_best_by: Literal["loss", "transfer"] = "loss"

    @field_validator("select_best_by")
    @classmethod
    def _transfer_needs_a_monitor(cls, value: str, info: ValidationInfo) -> str:
        if (
            value == "transfer"
            and info.data.get("transfer_monitor") is None
            and "transfer_monitor" in info.data
        ):
            raise ValueError("'transfer' needs training.transfer_monitor (the held-out tasks to score)")
        return value


class PretrainConfig(_Frozen):
    """Multi-task pretraining: model, tasks, data and loop.

    Args:
        run_dir: Output folder (config, metrics, checkpoints).
        seed: Seeds model initialisation, data order and augmentation.
        model: The shared model.
        tasks: The task database: a list of task specs (in a YAML file, ``tasks:`` may also be
            the path of a YAML file holding that list).
        data: Batching and loading.
        training: The loop.
        enable_progress: Show a progress bar.
    """

    run_dir: Path
    seed: int = 0
    model: ModelConfig
    tasks: list[DatabaseTask] = Field(min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    enable_progress: bool = True

    @model_validator(mode="after")
    def _unique_task_names(self) -> PretrainConfig:
        check_unique_names(self.tasks)
        return self


def load_pretrain_config(path: Path, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Read a pretraining config. Relative paths written in it (``run_dir``, ``tasks``, task
    sources, ``training.transfer_monitor.tasks``) are relative to the file; those of
    ``overrides`` to the current folder.

    Raises:
        ConfigError: every problem of the file, one per line.
    """
    path = Path(path)
    return validate_config(PretrainConfig, read_config(path, overrides), str(path))


_MONITOR = "training.transfer_monitor"
_RUN_PATHS = path_keys("run_dir", "tasks", f"{_MONITOR}.tasks", where=lambda value: isinstance(value, str))


def _is_pretrain_path(key: str, value: Any) -> bool:
    monitored = key.removeprefix(f"{_MONITOR}.") if key.startswith(f"{_MONITOR}.tasks.") else None
    return (
        _RUN_PATHS(key, value)
        or is_source_path(key, value)
        or (monitored is not None and is_source_path(monitored, value))
    )


def read_config(
    path: Path, overrides: Sequence[str] = (), *, is_path: IsPath = _is_pretrain_path
) -> dict[str, Any]:
    """A YAML config as a mapping, with ``--set`` overrides applied and its ``tasks`` read.

    ``tasks`` may be a list of task specs or the path of a YAML file holding one. A relative
    path (where ``is_path`` says a key holds one) is relative to the file it is written in, or
    to the current folder when it comes from ``overrides`` (``config_io``'s one rule).

    Raises:
        ConfigError: the file (or its tasks file) is missing, not YAML, or not a mapping.
    """
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    resolve_relative_paths(raw, is_path=is_path, base=path.absolute().parent)
    raw = apply_overrides(raw, overrides, is_path=is_path)
    if "tasks" in raw:
        raw["tasks"] = read_tasks(raw["tasks"], path)
    return read_monitor_tasks(raw, path)


def read_monitor_tasks(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """``raw`` with ``training.transfer_monitor.tasks`` read as ``read_tasks`` reads ``tasks``
    (relative to ``path``'s folder); the sections on the way are copied, ``raw`` is not changed.

    Raises:
        ConfigError: the task database file is missing, not YAML or not a list of tasks.
    """
    training = raw.get("training")
    if not isinstance(training, dict):
        return raw
    monitor = training.get("transfer_monitor")
    if not isinstance(monitor, dict) or "tasks" not in monitor:
        return raw
    monitor = {**monitor, "tasks": read_tasks(monitor["tasks"], path)}
    return {**raw, "training": {**training, "transfer_monitor": monitor}}

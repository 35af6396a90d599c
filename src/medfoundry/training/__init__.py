"""The memory-constant multi-task loop and what it needs: sampling, optimizers, checkpoints."""

from __future__ import annotations

from medfoundry.training.checkpoint import (
    load_checkpoint_config,
    load_model_weights,
    load_trainer_state,
    save_checkpoint,
)
from medfoundry.training.multitask_step import Optimizers, StepResult, joint_step, memory_constant_step
from medfoundry.training.optim import OptimizerConfig, build_adamw, lr_factor
from medfoundry.training.task_batch import TaskBatch, TaskCollate
from medfoundry.training.task_loader import CyclicTaskLoader
from medfoundry.training.task_sampler import RoundRobinSampler
from medfoundry.training.validation import validate

__all__ = [
    "CyclicTaskLoader",
    "OptimizerConfig",
    "Optimizers",
    "RoundRobinSampler",
    "StepResult",
    "TaskBatch",
    "TaskCollate",
    "build_adamw",
    "joint_step",
    "load_checkpoint_config",
    "load_model_weights",
    "load_trainer_state",
    "lr_factor",
    "memory_constant_step",
    "save_checkpoint",
    "validate",
]

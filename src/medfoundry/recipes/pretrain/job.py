"""Recipe: multi-task pretraining with memory flat in the number of tasks (UMedPT [0]).

``run(cfg)`` reads top to bottom: ``prepare_run`` checks the tasks and their data and builds the
model, optimizers and data streams (``recipes.pretrain.setup``; everything that can fail on user
input fails before the run folder is created), then the loop: set the learning rate, one shared
step (round-robin over tasks, per-task backward), log, validate, score transfer to held-out
tasks (``training.transfer_monitor``), save resumable checkpoints.

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

from medfoundry.evaluation.transfer_monitor import TransferScores
from medfoundry.recipes.pretrain.config import PretrainConfig
from medfoundry.recipes.pretrain.setup import PretrainRun, prepare_run
from medfoundry.training.checkpoint import save_checkpoint
from medfoundry.training.checkpoint_config import checkpoint_config
from medfoundry.training.metrics_log import MetricsLog
from medfoundry.training.multitask_step import StepResult
from medfoundry.training.optim import lr_factor, set_lr
from medfoundry.training.progress import TrainingProgress
from medfoundry.training.run_folder import last_checkpoint
from medfoundry.training.trainer_state import capture_trainer_state
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
    r = prepare_run(cfg, resume)
    try:
        _train(r)
    finally:  # loaders' workers, the metrics log and the process group, also when a step raised
        _finish(r)
    return r.run_dir


def _train(r: PretrainRun) -> None:
    """The training loop: steps, logging, validation, previews and checkpoints up to ``total_steps``."""
    t = r.cfg.training
    window = _TrainWindow()  # training time only: validation and saving excluded
    r.model.train()
    progress_bar = TrainingProgress(
        r.total_steps, start_step=r.step, enabled=r.cfg.enable_progress and r.dist.is_main
    )
    with r.dist.failures_reported(), progress_bar as progress:
        if not r.resumed:
            _validate_and_keep_best(r, progress)  # the untrained baseline of every task
            _score_transfer(r, progress)
        while r.step < r.total_steps:
            _set_learning_rates(r)
            started = time.perf_counter()
            # batches are fetched lazily: one task's batch in memory at a time
            batches = (
                b.to(r.device, r.device.type == "cuda", t.use_channels_last) for b in r.sampler.next_step()
            )
            result = r.step_fn(
                r.model,
                r.tasks,
                batches,
                r.optimizers,
                autocast_dtype=r.autocast_dtype,
                grad_clip_norm=t.grad_clip_norm,
                dist=r.dist,
            )
            window.seconds += time.perf_counter() - started
            r.step += 1
            _count_nonfinite(r, result, progress)
            window.add(result, r.dist.world_size)

            last = r.step == r.total_steps
            if r.metrics_log is not None and (r.step % t.log_every_steps == 0 or last):
                window.log(r, r.metrics_log, result, progress)
                window = _TrainWindow()
            epoch_end = r.step % r.sampler.steps_per_epoch == 0
            if epoch_end or last or (t.val_every_steps and r.step % t.val_every_steps == 0):
                _validate_and_keep_best(r, progress)
            if t.transfer_monitor is not None and (last or r.step % t.transfer_monitor.every_steps == 0):
                _score_transfer(r, progress)
            if r.previews and r.dist.is_main and (last or _every(r.step, t.preview_every_steps)):
                r.previews.save(r.model, r.step)
            if epoch_end or last or r.step % t.checkpoint_every_steps == 0:
                _save_last_checkpoint(r)


class _TrainWindow:
    """Task losses, images and training seconds since the last train log line."""

    def __init__(self) -> None:
        self.losses: dict[str, list[float]] = {}
        self.images, self.seconds = 0, 0.0

    def add(self, result: StepResult, world_size: int) -> None:
        for task, value in result.losses.items():
            self.losses.setdefault(task, []).append(value)
        self.images += result.images * world_size

    def log(
        self, r: PretrainRun, metrics_log: MetricsLog, result: StepResult, progress: TrainingProgress
    ) -> None:
        """Write the window's means to the metrics log and the progress bar."""
        means = {task: sum(v) / len(v) for task, v in self.losses.items()}
        images_per_s = self.images / max(self.seconds, 1e-9)
        metrics_log.log(
            r.step,
            "train",
            {
                **{f"loss/{task}": v for task, v in means.items()},
                "lr": r.optimizers.shared.param_groups[0]["lr"],
                "grad_norm": result.grad_norm,
                "images_per_s": images_per_s,
                "epoch": r.step / r.sampler.steps_per_epoch,
            },
        )
        progress.update(r.step, means, images_per_s)


def _every(step: int, interval: int | None) -> bool:
    return interval is not None and interval > 0 and step % interval == 0


def _set_learning_rates(r: PretrainRun) -> None:
    o = r.cfg.training.optimizer
    factor = lr_factor(r.step, r.total_steps, warmup_steps=o.warmup_steps, min_lr_ratio=o.min_lr_ratio)
    for optimizer in (r.optimizers.shared, *r.optimizers.heads.values()):
        set_lr(optimizer, factor)


def _validate_and_keep_best(r: PretrainRun, progress: TrainingProgress) -> None:
    """Validate every task; rank 0 logs the results and, with ``select_best_by: loss``, saves
    ``best`` on a new lowest mean loss."""
    results = validate(r.model, r.tasks, r.val_loaders, device=r.device, autocast_dtype=r.autocast_dtype)
    mean_loss = sum(result["loss"] for result in results.values()) / len(results)
    if r.metrics_log is not None:
        flat = {f"{task}/{k}": v for task, result in results.items() for k, v in result.items()}
        r.metrics_log.log(r.step, "val", {**flat, "mean_loss": mean_loss})
        progress.print(_val_line(r.step, results, mean_loss))
        if r.cfg.training.select_best_by == "loss" and mean_loss < r.best_val_loss:
            metrics = {"val": results, "val_mean_loss": mean_loss}
            save_checkpoint(r.run_dir / "checkpoints" / "best", r.model, _checkpoint_config(r, metrics))
    r.best_val_loss = min(r.best_val_loss, mean_loss)


def _score_transfer(r: PretrainRun, progress: TrainingProgress) -> None:
    """Rank 0 scores the held-out tasks, logs the scores and, with ``select_best_by: transfer``,
    saves ``best`` on a new highest mean score (the other ranks have no monitor)."""
    if r.monitor is None or r.metrics_log is None:
        return
    scores = r.monitor.score(r.model.encoder, device=r.device)
    r.metrics_log.log(r.step, "transfer", scores.metrics())
    progress.print(_transfer_line(r.step, scores))
    if r.cfg.training.select_best_by == "transfer" and scores.mean > r.best_transfer:
        metrics = {"transfer": scores.scores, "transfer_mean": scores.mean}
        save_checkpoint(r.run_dir / "checkpoints" / "best", r.model, _checkpoint_config(r, metrics))
    r.best_transfer = max(r.best_transfer, scores.mean)


def _save_last_checkpoint(r: PretrainRun) -> None:
    trainer_state = capture_trainer_state(
        r.step,
        best_val_loss=r.best_val_loss,
        best_transfer=r.best_transfer,
        nonfinite_streak=r.nonfinite_streak,
        consumed=r.sampler.state(),
        optimizers=r.optimizers,
        dist=r.dist,
        device=r.device,
    )
    if r.dist.is_main:
        save_checkpoint(
            last_checkpoint(r.run_dir), r.model, _checkpoint_config(r, None), trainer_state=trainer_state
        )


def _finish(r: PretrainRun) -> None:
    r.sampler.close()
    if r.metrics_log is not None:
        r.metrics_log.close()
    skipped = {name: len(d.skipped) for name, d in r.data.items() if d.skipped}
    if skipped:
        log.warning(
            "samples left out (data.on_error: skip): %s", ", ".join(f"{n}: {c}" for n, c in skipped.items())
        )
    r.dist.close()


def _checkpoint_config(r: PretrainRun, metrics: dict[str, Any] | None) -> dict[str, Any]:
    return checkpoint_config(
        r.cfg.model,
        r.cfg.tasks,
        seed=r.cfg.seed,
        strategy=r.cfg.training.strategy,
        step=r.step,
        metrics=metrics,
        sample_counts=r.sample_counts,
    )


def _count_nonfinite(r: PretrainRun, result: StepResult, progress: TrainingProgress) -> None:
    """Warn about skipped batches; stop after ``max_consecutive_nonfinite`` such steps in a row."""
    r.nonfinite_streak = r.nonfinite_streak + 1 if result.nonfinite else 0
    if not result.nonfinite:
        return
    lr = r.optimizers.shared.param_groups[0]["lr"]
    tasks = ", ".join(result.nonfinite)
    message = f"step {r.step}: non-finite loss in task(s) {tasks} (lr {lr:.3g}); batch skipped"
    log.warning(message)
    progress.print(f"[yellow]{message}")
    if r.nonfinite_streak >= r.cfg.training.max_consecutive_nonfinite:
        raise NonFiniteLossError(
            f"{message}; {r.nonfinite_streak} steps in a row had non-finite losses, stopping. "
            "Lower training.optimizer.lr or check the data of these tasks."
        )


def _val_line(step: int, results: dict[str, dict[str, float]], mean_loss: float) -> str:
    parts = []
    for task, r in results.items():
        shown = [f"loss {r['loss']:.3f}"] + [
            f"{k} {v:.3f}" for k, v in r.items() if k != "loss" and "/" not in k and math.isfinite(v)
        ]
        parts.append(f"{task}: {', '.join(shown)}")
    return f"[cyan]val @ step {step}[/] mean loss {mean_loss:.3f} | " + " | ".join(parts)


def _transfer_line(step: int, scores: TransferScores) -> str:
    parts = [
        f"{task}: " + ", ".join(f"{probe} {v:.3f}" for probe, v in by_probe.items())
        for task, by_probe in scores.scores.items()
    ]
    return (
        f"[magenta]transfer @ step {step}[/] mean {scores.mean:.3f} ({scores.seconds:.1f} s) | "
        + " | ".join(parts)
    )

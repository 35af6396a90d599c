"""Transfer to held-out tasks, measured while a model pretrains: frozen features, probes, a score.

Pretraining's validation loss says how well the model does its own tasks, not whether its
encoder transfers. The monitor answers the second question during the run: it embeds the
training and validation images of chosen held-out tasks with the encoder as it is, fits the
study's probes on the pooled features (class-balanced logistic regression with ``C`` chosen on
the validation split, cosine kNN; ``evaluation.probes``) and scores each task's primary metric
on its validation split.

With ``folds: k`` (k >= 2) the score is cross-validated instead: the training and validation
subsets are pooled, their groups (``Record.group``: patients, volumes, spatial blocks) dealt into
``k`` folds (``data.folds``), each fold predicted by probes fitted on the others, and the metric
computed once on the pooled out-of-fold predictions. A validation split of a few groups ranks
steps by those few places; every non-test group then counts, at ``k`` probe fits instead of one
(the embedding is shared: 1.3 times the seconds of an evaluation on the corpus's held-out tasks,
docs/benchmarks.md).

The splits are the study's (``load_study_task_data`` with the same split settings), so the
monitor's validation split is the one a study selects on. The test split is never read: its
rows are listed, as a study lists them, but not one of its images is decoded. The logistic
regression's ``C`` is chosen on the split it is scored on: an optimistic number, but the same
bias at every step, which is what ranking steps needs (report the study's test scores instead).

Setup decodes at most ``max_images`` training and ``max_images`` validation images per task
once, at the model's input size, and holds them in memory as the cache stores them (uint8 or
float16); an evaluation is forward passes and probe fits, nothing else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medfoundry.data.cache import CacheSettings, prepare_arrays
from medfoundry.data.folds import group_count, group_folds
from medfoundry.data.fractions import NestedFractions
from medfoundry.data.record import DEFAULT_IGNORE_INDEX, Record
from medfoundry.errors import ConfigError
from medfoundry.evaluation.pretrained_encoder import pooled_levels
from medfoundry.evaluation.probes import (
    LabelledFeatures,
    ProbeConfig,
    ProbeMode,
    fit_probe,
    labelled_features,
    probe_metrics,
)
from medfoundry.evaluation.study_data import load_study_task_data
from medfoundry.evaluation.transfer_monitor_config import KEY, TransferMonitorConfig
from medfoundry.tasks import TaskType, build_task, with_classes
from medfoundry.tasks.spec import TaskSpec
from medfoundry.training.rng import rng_state, set_rng_state

__all__ = [
    "HeldOutSplit",
    "MonitoredTask",
    "ScoredRecords",
    "TransferMonitor",
    "TransferMonitorConfig",
    "TransferScores",
    "check_monitor_levels",
    "load_transfer_monitor",
    "unit_range",
]


@dataclass(frozen=True)
class HeldOutSplit:
    """One split's subset of a monitored task, in memory.

    Attributes:
        records: The records (rows of the task's source).
        images: ``(N, C, S, S)`` uint8 or float16 as the cache stores them (C = 1 or 3).
        targets: Their labels, as ``LabelledFeatures.targets``.
    """

    records: list[Record]
    images: torch.Tensor
    targets: np.ndarray


@dataclass(frozen=True)
class MonitoredTask:
    """A held-out task's training and validation subsets; ``folds``: each record's fold, training
    records first (``None``: scored on the validation subset)."""

    task: TaskType
    train: HeldOutSplit
    val: HeldOutSplit
    folds: np.ndarray | None = None


@dataclass(frozen=True)
class ScoredRecords:
    """A monitored task's scored records (``records``, ``targets`` as ``LabelledFeatures``) and
    each probe's ``(N, C)`` probabilities of them."""

    records: list[Record]
    targets: np.ndarray
    probabilities: dict[str, np.ndarray]


@dataclass(frozen=True)
class TransferScores:
    """One evaluation of the monitor.

    Attributes:
        scores: Task -> probe -> the task's primary metric on its validation subset.
        mean: Mean over tasks and probes (NaN when any score is NaN: never a new best).
        seconds: Wall time of the evaluation.
    """

    scores: dict[str, dict[str, float]]
    mean: float
    seconds: float

    def metrics(self) -> dict[str, float]:
        """Flat values for the metrics log: ``<task>/<probe>``, ``mean`` and ``seconds``."""
        flat = {
            f"{task}/{probe}": v for task, by_probe in self.scores.items() for probe, v in by_probe.items()
        }
        return {**flat, "mean": self.mean, "seconds": self.seconds}


class TransferMonitor:
    """Scores an encoder's frozen, pooled features on held-out tasks (see the module docstring).

    Args:
        tasks: Task name -> its subsets in memory (``load_transfer_monitor`` builds them).
        probes: The probes to fit on each task.
        probe: Probe settings (``feature_levels``, ``batch_size``, the probes' own).
    """

    def __init__(
        self, tasks: Mapping[str, MonitoredTask], *, probes: Sequence[ProbeMode], probe: ProbeConfig
    ) -> None:
        self.tasks = dict(tasks)
        self.probes = list(probes)
        self.probe = probe

    def score(self, encoder: nn.Module, *, device: torch.device) -> TransferScores:
        """Embed every subset with ``encoder`` (eval mode, fp32, no gradients), fit the probes and
        score them. The encoder's train / eval mode and every global RNG state are put back, so a
        run that is monitored trains exactly as one that is not.

        Args:
            encoder: Maps ``(B, 3, S, S)`` images in [0, 1] to a list of feature maps (a pyramid).
            device: Where ``encoder`` lives.
        """
        started = time.perf_counter()
        predicted = self.predict(encoder, device=device)
        scores = {
            name: {
                mode: probe_metrics(self.tasks[name].task, p, scored.targets).get(
                    str(self.tasks[name].task.primary_metric), math.nan
                )
                for mode, p in scored.probabilities.items()
            }
            for name, scored in predicted.items()
        }
        values = [v for by_probe in scores.values() for v in by_probe.values()]
        return TransferScores(scores, float(np.mean(values)), time.perf_counter() - started)

    def predict(self, encoder: nn.Module, *, device: torch.device) -> dict[str, ScoredRecords]:
        """What ``score`` scores: per task, the scored records (the validation subset, or with
        ``folds`` every record out of fold) and each probe's probabilities. Mode and RNG states
        are put back as ``score`` says."""
        rng, was_training = rng_state(), encoder.training
        encoder.eval()
        try:
            return {name: self._predict_task(t, encoder, device) for name, t in self.tasks.items()}
        finally:
            encoder.train(was_training)
            set_rng_state(rng)

    def _predict_task(self, t: MonitoredTask, encoder: nn.Module, device: torch.device) -> ScoredRecords:
        train, val = (
            LabelledFeatures(self._embed(encoder, split.images, device), split.targets)
            for split in (t.train, t.val)
        )
        if t.folds is None:
            return ScoredRecords(
                t.val.records,
                val.targets,
                {
                    mode: fit_probe(mode, t.task, train, val, self.probe).predict(val.features)
                    for mode in self.probes
                },
            )
        pool = LabelledFeatures(
            np.concatenate([train.features, val.features]), np.concatenate([train.targets, val.targets])
        )
        return ScoredRecords(
            [*t.train.records, *t.val.records],
            pool.targets,
            {mode: self._out_of_fold(mode, t.task, pool, t.folds) for mode in self.probes},
        )

    def _out_of_fold(
        self, mode: ProbeMode, task: TaskType, pool: LabelledFeatures, folds: np.ndarray
    ) -> np.ndarray:
        """Each record's probabilities from the probe fitted on the other folds (its ``C`` chosen on
        the fold it predicts, as ``folds: 1`` chooses on the split it scores)."""
        parts = []
        for fold in range(int(folds.max()) + 1):
            held = np.flatnonzero(folds == fold)
            held_out = pool.take(held)
            probe = fit_probe(mode, task, pool.take(np.flatnonzero(folds != fold)), held_out, self.probe)
            parts.append((held, probe.predict(held_out.features)))
        out = np.empty((len(pool), parts[0][1].shape[1]), dtype=parts[0][1].dtype)
        for held, probabilities in parts:
            out[held] = probabilities
        return out

    @torch.no_grad()
    def _embed(self, encoder: nn.Module, images: torch.Tensor, device: torch.device) -> np.ndarray:
        parts = [
            pooled_levels(encoder(unit_range(batch).to(device)), self.probe.feature_levels).cpu()
            for batch in images.split(self.probe.batch_size)
        ]
        return torch.cat(parts).numpy()


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """Cached pixels ``(B, C, S, S)`` (uint8, or float16 in [0, 1]) as the model's input:
    ``(B, 3, S, S)`` float32 in [0, 1], grey replicated, exactly as ``TaskDataset`` gives them.

    Examples:
        >>> images = unit_range(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8))
        >>> tuple(images.shape), images.dtype, float(images.max())
        ((2, 3, 4, 4), torch.float32, 1.0)
    """
    unit = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    return unit.expand(-1, 3, -1, -1)


def load_transfer_monitor(
    cfg: TransferMonitorConfig, *, image_size: int, num_workers: int = 0
) -> TransferMonitor:
    """Check the monitored tasks, draw their subsets and decode them into memory at ``image_size``.

    Args:
        cfg: The monitor's settings.
        image_size: The model's input side.
        num_workers: Processes that decode the images.

    Raises:
        ConfigError: a task that takes no probes (one line per task, all together).
        ConfigError: with ``folds`` >= 2, a task with fewer groups than folds (its training and
            validation subsets).
        DataError: a task's data cannot be read, or it has no validation rows.
    """
    specs = [with_classes(spec) for spec in cfg.selected_tasks]
    tasks = {spec.name: build_task(spec) for spec in specs}
    problems = [
        f"{KEY}.task_names: task '{name}' ({task.spec.type}) cannot be monitored: its study modes "
        f"({', '.join(task.evaluation_modes) or 'none'}) lack {', '.join(lacking)}; monitor "
        "classification or multilabel tasks"
        for name, task in tasks.items()
        if (lacking := [m for m in cfg.probes if m not in task.evaluation_modes])
    ]
    if problems:
        raise ConfigError(problems)
    monitored = {}
    for spec in specs:
        task = tasks[spec.name]
        data = load_study_task_data(
            spec,
            task,
            split_seed=cfg.split_seed,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
        )
        train, val = (
            _held_out_split(spec, task, data.splits[split], split, cfg, image_size, num_workers)
            for split in ("train", "val")
        )
        monitored[spec.name] = MonitoredTask(
            task, train, val, _folds(spec.name, [*train.records, *val.records], cfg)
        )
    return TransferMonitor(monitored, probes=cfg.probes, probe=cfg.probe)


def _folds(name: str, records: list[Record], cfg: TransferMonitorConfig) -> np.ndarray | None:
    """The records' folds, or ``None`` with ``folds: 1``.

    Raises:
        ConfigError: fewer groups than folds.
    """
    if cfg.folds == 1:
        return None
    groups = group_count(records)
    if groups < cfg.folds:
        raise ConfigError(
            f"{KEY}.folds: task '{name}' has {groups} group(s) in its training and validation subsets, "
            f"fewer than {cfg.folds} folds; lower folds (or 1: score on the validation split)"
        )
    return group_folds(records, cfg.folds, seed=cfg.fold_seed)


def check_monitor_levels(levels: Sequence[int], num_levels: int, encoder_name: str) -> None:
    """Every pooled level must be a level of the encoder's pyramid.

    Raises:
        ConfigError: one line per missing level.
    """
    problems = [
        f"{KEY}.probe.feature_levels: {level} is not a level of encoder {encoder_name} "
        f"({num_levels} levels: 0 is the finest, -1 the deepest)"
        for level in levels
        if not -num_levels <= level < num_levels
    ]
    if problems:
        raise ConfigError(problems)


def _held_out_split(
    spec: TaskSpec,
    task: TaskType,
    records: list[Record],
    split: str,
    cfg: TransferMonitorConfig,
    image_size: int,
    num_workers: int,
) -> HeldOutSplit:
    """A stratified subset of at most ``max_images`` of ``records``, decoded into memory."""
    if len(records) > cfg.max_images:
        # the study's nested, stratified order (each record alone, not whole groups)
        records = NestedFractions(records, cfg.split_seed, task.ignore_index, keep_groups=False).subset(
            cfg.max_images / len(records)
        )
    prepared = prepare_arrays(
        f"{spec.name}-transfer-{split}",
        records,
        task.target,
        size=image_size,
        preprocessing=spec.preprocessing,
        num_classes=len(spec.classes),
        ignore_index=DEFAULT_IGNORE_INDEX if task.ignore_index is None else task.ignore_index,
        cache=CacheSettings(folder=None, num_workers=num_workers),  # held here, written nowhere
    )
    arrays = prepared.arrays
    images = torch.from_numpy(np.asarray(arrays.arrays["images"][arrays.rows])).permute(0, 3, 1, 2)
    no_features = np.zeros((len(prepared.records), 0), np.float32)
    targets = labelled_features(no_features, prepared.records).targets
    return HeldOutSplit(prepared.records, images.contiguous(), targets)

"""Running one study cell: choose its data, fit a probe or train a model, score every test set."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfoundry.data.record import Record
from medfoundry.evaluation.finetune import FinetuneConfig, FinetuneResult, finetune, score_model
from medfoundry.evaluation.level_choice import ChosenLevels, fit_probe_choosing_levels
from medfoundry.evaluation.linear_decoder import (
    DenseFeatures,
    LinearDecoderConfig,
    fit_linear_decoder,
    score_decoder,
)
from medfoundry.evaluation.predictions import item_layout
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder
from medfoundry.evaluation.probes import (
    KNNProbe,
    LabelledFeatures,
    LinearProbe,
    ProbeConfig,
    ProbeMode,
    fit_probe,
    labelled_features,
    probe_accumulator,
)
from medfoundry.evaluation.study_cells import Cell, result_row
from medfoundry.evaluation.study_data import ALL, StudyTaskData
from medfoundry.evaluation.study_pixels import StudyPixels

__all__ = [
    "CellData",
    "CellOutcome",
    "FeatureTable",
    "cell_data",
    "run_linear_decoder_cell",
    "run_probe_cell",
    "run_training_cell",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellData:
    """What one cell trains, selects and tests on.

    Attributes:
        train: Training records (a fraction's subset, or one center's).
        val: Validation records (model selection).
        tests: Test-set name (``all`` or a center group) -> records.
    """

    train: list[Record]
    val: list[Record]
    tests: dict[str, list[Record]]


@dataclass(frozen=True)
class CellOutcome:
    """What one cell produced.

    Attributes:
        rows: Result rows, one per metric per test set.
        items: Test set -> the per-item results its metrics kept (``TaskMetrics.items``).
        training: The trained model of a ``finetune`` or ``frozen-decoder`` cell, else ``None``.
    """

    rows: list[dict[str, Any]]
    items: dict[str, dict[str, np.ndarray]]
    training: FinetuneResult | None = None


@dataclass(frozen=True)
class FeatureTable:
    """Features of every record of a task, looked up by the record's ``key`` (file and position).

    Attributes:
        features: ``(N, D)`` float32.
        rows: Record key -> row of ``features``.
        level_columns: Candidate pyramid levels (``probe.feature_level_choices``) -> their
            columns of ``features``; empty: a probe fits on every column.
        fitted: Probes already fitted on these features, by mode, center and training set:
            cells with the same set of training records (every seed at 100 % of the labels)
            share one fit, which is what each of them would fit.
    """

    features: np.ndarray
    rows: dict[tuple[Path, str | None, int | None], int]
    level_columns: dict[str, np.ndarray] = field(default_factory=dict)
    fitted: dict[tuple[Any, ...], LinearProbe | KNNProbe | ChosenLevels] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        features: np.ndarray,
        records: Sequence[Record],
        level_columns: dict[str, np.ndarray] | None = None,
    ) -> FeatureTable:
        return cls(features, {r.key: i for i, r in enumerate(records)}, level_columns or {})

    def labelled(self, records: Sequence[Record]) -> LabelledFeatures:
        """Features and targets of ``records``."""
        return labelled_features(self.features[[self.rows[r.key] for r in records]], records)


def cell_data(cell: Cell, data: StudyTaskData) -> CellData:
    """The cell's training subset, validation set and test sets.

    A pooled cell trains on its fraction's nested subset (or its episode's k-shot subset) and
    tests on the whole test split. A cross-center cell trains on all training records of its
    center group, selects on that group's validation records (all validation records when it
    has none) and tests on the test records of every center group.
    """
    if cell.shots is not None:
        train = data.few_shot_subset(cell.shots, cell.seed)
        return CellData(train, data.splits["val"], {ALL: data.splits["test"]})
    if cell.train_center == ALL:
        assert cell.fraction is not None  # a pooled cell without shots has a fraction
        return CellData(
            data.train_subset(cell.fraction, cell.seed), data.splits["val"], {ALL: data.splits["test"]}
        )
    val = data.center_records("val", cell.train_center)
    if not val:
        log.warning(
            "%s: center %s has no validation rows; selecting on all centers'", cell.task, cell.train_center
        )
        val = data.splits["val"]
    tests = {group: data.center_records("test", group) for group in data.centers}
    return CellData(
        data.center_records("train", cell.train_center), val, {g: r for g, r in tests.items() if r}
    )


def run_probe_cell(
    cell: Cell, data: StudyTaskData, features: FeatureTable, *, cfg: ProbeConfig
) -> CellOutcome:
    """Fit the cell's probe (``linear`` or ``knn``) on frozen features; score every test set."""
    inputs = cell_data(cell, data)
    train = features.labelled(inputs.train)
    mode: ProbeMode = "linear" if cell.mode == "linear" else "knn"
    key = (mode, cell.train_center, frozenset(r.key for r in inputs.train))
    probe = features.fitted.get(key)
    if probe is None:
        val = features.labelled(inputs.val)
        probe = features.fitted[key] = (
            fit_probe_choosing_levels(mode, data.task, train, val, cfg, features.level_columns)
            if features.level_columns
            else fit_probe(mode, data.task, train, val, cfg)
        )
    levels = probe.levels if isinstance(probe, ChosenLevels) else ""
    rows, items = [], {}
    for test_center, records in inputs.tests.items():
        test = features.labelled(records)
        metrics = probe_accumulator(data.task, probe.predict(test.features), test.targets)
        rows += [
            result_row(
                cell, n_train=len(train), test_center=test_center, metric=m, value=v, probe_levels=levels
            )
            for m, v in metrics.compute().items()
        ]
        items[test_center] = {**metrics.items(), **item_layout(records)}
    return CellOutcome(rows, items)


def run_linear_decoder_cell(
    cell: Cell,
    data: StudyTaskData,
    features: DenseFeatures,
    *,
    metric: str,
    cfg: LinearDecoderConfig,
) -> CellOutcome:
    """Fit a per-pixel linear decoder on the frozen encoder's feature maps (``linear-decoder``;
    its L2 penalty chosen on the validation ``metric``); score every test set.

    ``features``: the encoder's ``dense_features`` of every record of the task."""
    inputs = cell_data(cell, data)
    train, val = features.subset(inputs.train), features.subset(inputs.val)
    fitted = fit_linear_decoder(data.task, train, val, metric=metric, cfg=cfg)
    rows, items = [], {}
    for test_center, records in inputs.tests.items():
        test = features.subset(records)
        metrics = score_decoder(fitted.decoder, data.task, test, batch_size=cfg.batch_size)
        rows += [
            result_row(cell, n_train=len(inputs.train), test_center=test_center, metric=m, value=v)
            for m, v in metrics.compute().items()
        ]
        items[test_center] = {**metrics.items(), **item_layout(records)}
    return CellOutcome(rows, items)


def run_training_cell(
    cell: Cell,
    data: StudyTaskData,
    encoder: PretrainedEncoder,
    *,
    metric: str,
    cfg: FinetuneConfig,
    pixels: StudyPixels | None = None,
) -> CellOutcome:
    """Fine-tune (``finetune``) or train decoder and head on the frozen encoder (``frozen-decoder``).

    ``pixels``: the task's cached pixels; ``None``: decode every sample at every access.

    Returns:
        Result rows and per-item results per test set, and the trained model with its best
        validation step (``never_improved`` marks a cell whose validation metric never rose after
        its first evaluation: a decoder or fine-tuning run that did not learn).
    """
    inputs = cell_data(cell, data)
    name = data.spec.name
    result = finetune(
        encoder,
        name,
        data.task,
        train=inputs.train,
        val=inputs.val,
        metric=metric,
        cfg=cfg,
        freeze_encoder=cell.mode == "frozen-decoder",
        seed=cell.seed,
        preprocessing=data.spec.preprocessing,
        pixels=pixels,
    )
    if result.never_improved:
        log.warning(
            "%s: the validation %s never improved after the first evaluation (best %.3f at step %d "
            "of %d): flagged in the results",
            cell,
            metric,
            result.best_score,
            result.best_step,
            result.steps,
        )
    rows, items = [], {}
    for test_center, records in inputs.tests.items():
        metrics = score_model(
            result.model,
            name,
            data.task,
            records=records,
            image_size=encoder.image_size,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            preprocessing=data.spec.preprocessing,
            pixels=pixels,
        )
        rows += [
            result_row(
                cell,
                n_train=len(inputs.train),
                test_center=test_center,
                metric=m,
                value=v,
                never_improved=result.never_improved,
            )
            for m, v in metrics.compute().items()
        ]
        items[test_center] = {**metrics.items(), **item_layout(records)}
    return CellOutcome(rows, items, result)

"""A probe's pooled pyramid levels, chosen per cell on the validation split
(``probe.feature_level_choices``).

The encoder's features are extracted once, for the union of the candidates' levels (pooled,
finest first); each candidate is a set of columns of that table. A cell fits its probe on each
candidate's columns and keeps the candidate whose probe has the lowest validation log-loss
(class-balanced when the probe is), so for the linear probe levels and ``C`` are one joint
choice on validation; the test split is never read to choose. Ties keep the earlier candidate.

Why: which levels carry a task differs between encoders and with the number of labels (a
random network's early levels, a pretrained network's middle ones; fewer dimensions at few
labels), and one fixed set can favour one encoder over another. Each encoder gets the set its
own validation split prefers, as DINOv2's linear evaluation chooses its blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder
from medfoundry.evaluation.probes import (
    KNNProbe,
    LabelledFeatures,
    LinearProbe,
    ProbeConfig,
    ProbeMode,
    fit_probe,
    log_loss,
)
from medfoundry.tasks.task_type import TaskType

__all__ = ["ChosenLevels", "extracted_levels", "fit_probe_choosing_levels", "level_name"]


def level_name(levels: Sequence[int]) -> str:
    """How ``results.csv`` names a set of levels: ``"-3 -2 -1"``."""
    return " ".join(str(level) for level in levels)


def extracted_levels(
    encoder: object, *, feature_levels: Sequence[int], feature_level_choices: Sequence[Sequence[int]]
) -> tuple[list[int], dict[str, np.ndarray]]:
    """The levels to extract for ``encoder`` and each candidate's columns among them.

    Without candidates (or for an encoder without a pyramid, such as the raw pixels):
    ``feature_levels`` and no columns (the cell fits on every column).
    """
    choices = feature_level_choices
    if not choices or not isinstance(encoder, PretrainedEncoder):
        return list(feature_levels), {}
    widths = [level.channels for level in encoder.encoder.feature_info]
    n = len(widths)
    levels = sorted({level % n for choice in choices for level in choice})
    starts = dict(zip(levels, np.cumsum([0] + [widths[level] for level in levels]).tolist(), strict=False))
    columns = {
        level_name(choice): np.concatenate(
            [np.arange(starts[level % n], starts[level % n] + widths[level % n]) for level in choice]
        )
        for choice in choices
    }
    return levels, columns


@dataclass(frozen=True)
class ChosenLevels:
    """A probe fitted on some columns of the features.

    Attributes:
        probe: The fitted probe.
        columns: Its columns of the feature table.
        levels: The candidate they are (``level_name``).
        val_loss: Its validation log-loss.
    """

    probe: LinearProbe | KNNProbe
    columns: np.ndarray
    levels: str
    val_loss: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C)`` from the whole feature table's rows."""
        return self.probe.predict(features[:, self.columns])


def fit_probe_choosing_levels(
    mode: ProbeMode,
    task: TaskType,
    train: LabelledFeatures,
    val: LabelledFeatures,
    cfg: ProbeConfig,
    columns: Mapping[str, np.ndarray],
) -> ChosenLevels:
    """Fit the probe on each candidate's ``columns``; keep the lowest validation log-loss."""
    best: ChosenLevels | None = None
    balanced = cfg.class_weight == "balanced"
    for name, cols in columns.items():
        train_cols = LabelledFeatures(train.features[:, cols], train.targets)
        val_cols = LabelledFeatures(val.features[:, cols], val.targets)
        probe = fit_probe(mode, task, train_cols, val_cols, cfg)
        loss = log_loss(probe.predict(val_cols.features), val.targets, balanced=balanced)
        if best is None or loss < best.val_loss:
            best = ChosenLevels(probe, cols, name, loss)
    if best is None:
        raise ValueError("no candidate levels")
    return best

"""Score helpers shared by the task types' metrics, unweighted and under item weights.

Every ``weighted_*`` function scores one test set under ``B`` weightings of its ``N`` items at
once: ``weights`` is ``(B, N)``, row ``b`` says how often each item counts (a bootstrap resample
is a row of multiplicities; a row of ones is the plain score). So one code path gives both the
reported value and its bootstrap distribution, and a paired comparison of two models uses the
same rows for both. They are written here, vectorised over rows, because the libraries' metrics
(scikit-learn, torchmetrics) score one weighting per call: a thousand resamples of a few hundred
items cost milliseconds here and seconds there. Tests compare each with scikit-learn (with
``sample_weight``) or torchmetrics.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "ECE_BINS",
    "LOWER_IS_BETTER",
    "macro_auroc",
    "unit_weights",
    "weighted_accuracy",
    "weighted_balanced_accuracy",
    "weighted_ece",
    "weighted_macro_auroc",
]

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error (Guo et al. 2017; torchmetrics)."""

LOWER_IS_BETTER = frozenset({"ece"})
"""Metrics where a smaller value is better (none can be a primary metric, which is maximised)."""


def unit_weights(n: int) -> np.ndarray:
    """``(1, n)`` ones: the weighting that gives the plain, unresampled score."""
    return np.ones((1, n), dtype=np.float64)


def macro_auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over columns that have both classes among labelled entries.

    Args:
        targets: ``(N, C)`` with 1, 0, or NaN for "not labelled" (NaN entries are ignored).
        scores: ``(N, C)`` predicted scores or probabilities.

    Returns:
        The mean AUROC over qualifying columns, or NaN when none qualifies.

    Examples:
        >>> t = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0]], dtype=float)
        >>> s = np.array([[0.9, 0.2], [0.1, 0.5], [0.8, 0.7], [0.3, 0.1]])
        >>> macro_auroc(t, s)
        1.0
    """
    return float(weighted_macro_auroc(targets, scores, unit_weights(targets.shape[0]))[0])


def weighted_macro_auroc(targets: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest AUROC per weighting (see ``macro_auroc``): ``(B,)``.

    Per column, the AUROC is the Mann-Whitney statistic with ties counted one half, which equals
    the area under the ROC curve; under weights each pair (positive i, negative j) counts
    ``w_i * w_j``. A column counts in a row when that row weights both a positive and a negative.
    """
    per_column = []
    for c in range(targets.shape[1]):
        labelled = ~np.isnan(targets[:, c])
        per_column.append(_weighted_auroc(targets[labelled, c], scores[labelled, c], weights[:, labelled]))
    if not per_column:
        return np.full(weights.shape[0], math.nan)
    return _nanmean_rows(np.stack(per_column, axis=1))


def weighted_accuracy(correct: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Share of weight on correct items, ``(B,)`` (NaN for an all-zero row)."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ correct.astype(np.float64) / total, math.nan)


def weighted_balanced_accuracy(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, *, weights: np.ndarray
) -> np.ndarray:
    """Mean recall over the classes a row weights (scikit-learn's ``balanced_accuracy_score``), ``(B,)``."""
    onehot = np.eye(num_classes)[labels]  # (N, C)
    hits = onehot * (predictions == labels)[:, None]
    support, recalled = weights @ onehot, weights @ hits  # (B, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, recalled / support, math.nan)
    return _nanmean_rows(recall)


def weighted_ece(
    confidence: np.ndarray, correct: np.ndarray, weights: np.ndarray, *, bins: int = ECE_BINS
) -> np.ndarray:
    """Expected calibration error per row, ``(B,)``: ``sum_b |acc_b - conf_b| * n_b / n``.

    Bins are ``[k / bins, (k + 1) / bins)`` over the top-class confidence, the last one closed,
    as torchmetrics' ``multiclass_calibration_error`` (``norm="l1"``) bins them.

    [0] Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """
    boundaries = np.linspace(0, 1, bins + 1, dtype=np.float32)  # torch.linspace's float32 values
    index = np.clip(np.searchsorted(boundaries, confidence.astype(np.float32), side="right") - 1, 0, bins - 1)
    members = np.eye(bins)[index]  # (N, bins)
    accuracy_mass = weights @ (members * correct[:, None])
    confidence_mass = weights @ (members * confidence.astype(np.float64)[:, None])
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(accuracy_mass - confidence_mass).sum(axis=1) / total, math.nan)


def _weighted_auroc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    if y.size == 0:
        return np.full(weights.shape[0], math.nan)
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # groups of tied scores
    w = weights[:, order]
    if starts.size == s.size:  # no ties (continuous probabilities): each item is its own group
        positives, negatives = w * y_sorted, w * (1 - y_sorted)
    else:
        positives = np.add.reduceat(w * y_sorted, starts, axis=1)  # (B, groups)
        negatives = np.add.reduceat(w * (1 - y_sorted), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives  # negative weight scored strictly lower
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    wins = (positives * (below + 0.5 * negatives)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, math.nan)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Row means over finite entries; NaN for a row without any."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row is a legitimate NaN
        means: np.ndarray = np.nanmean(values, axis=1)
    return means

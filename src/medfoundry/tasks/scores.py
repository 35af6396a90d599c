"""Score helpers shared by the classification-like task types."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["macro_auroc"]


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
    values = []
    for c in range(targets.shape[1]):
        labelled = ~np.isnan(targets[:, c])
        y = targets[labelled, c]
        if y.size and 0 < y.sum() < y.size:
            values.append(roc_auc_score(y, scores[labelled, c]))
    return float(np.mean(values)) if values else math.nan

"""k-shot episodes: ``k`` labelled training samples of every class, drawn again per episode.

Few-shot evaluation (DINOv3's ``k_or_percent`` with ``n_tries``, UNI, THUNDER) fits a probe on
``k`` samples per class (1, 2, 4, 8, 16) and repeats the draw over many episodes, because which
``k`` images are drawn matters as much as the features at such sizes. Within one episode the
draws are nested: the 2-shot set holds the 1-shot set, and so on, so a k-shot curve measures
what more shots add rather than a new random draw. The draw depends only on the labels, the
episode and the class, so every encoder of a study sees the same episodes (which makes paired
comparisons possible).

Examples:
    >>> labels = [0, 0, 0, 1, 1, 1, 1, 2, 2]
    >>> one, two = few_shot_indices(labels, 1, episode=0), few_shot_indices(labels, 2, episode=0)
    >>> len(one), len(two), set(one) <= set(two)
    (3, 6, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from medfoundry.errors import ConfigError

__all__ = ["few_shot_indices", "smallest_class"]


def few_shot_indices(labels: Sequence[int], shots: int, episode: int) -> list[int]:
    """Positions (ascending) of ``shots`` samples of every class present in ``labels``.

    Args:
        labels: Class index of each training sample.
        shots: Samples per class, at least 1.
        episode: Seeds the draw; the same episode gives nested draws for growing ``shots``.

    Raises:
        ConfigError: a class has fewer than ``shots`` samples.
    """
    if shots < 1:
        raise ConfigError(f"shots must be at least 1, got {shots}")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    chosen = []
    for label, members in sorted(by_class.items()):
        if len(members) < shots:
            raise ConfigError(f"{shots} shots asked, but class {label} has only {len(members)} samples")
        order = np.random.default_rng([episode, label]).permutation(len(members))
        chosen += [members[j] for j in order[:shots]]
    return sorted(chosen)


def smallest_class(labels: Sequence[int]) -> tuple[int, int]:
    """``(class, count)`` of the class present with the fewest samples (ties: the lower index)."""
    counts = Counter(int(label) for label in labels)
    label = min(counts, key=lambda c: (counts[c], c))
    return label, counts[label]

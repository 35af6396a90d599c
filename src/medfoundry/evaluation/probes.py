"""Frozen-feature probes: logistic regression and cosine kNN, scored with the task's own metrics.

Both probes map features ``(N, D)`` to class probabilities ``(N, C)``: softmax-like rows for
classification, independent per-class probabilities for multilabel tasks (whose missing
labels, NaN, are left out of fitting and scoring). Probabilities go through the task type's
metric accumulator, so a probe's accuracy or AUROC is computed exactly as a fine-tuned model's.

BLAS runs single-threaded while probes fit: these are many small problems, where thread
hand-offs cost more than they save (on the 2-core reference machine a 600 x 512 multinomial
fit took 0.06 s on one OpenBLAS thread and 1.8 s on two).
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

from medfoundry.data.record import Record
from medfoundry.tasks.task_type import TaskMetrics, TaskType

__all__ = [
    "KNNProbe",
    "LabelledFeatures",
    "LinearProbe",
    "ProbeConfig",
    "ProbeMode",
    "fit_probe",
    "labelled_features",
    "log_loss",
    "probe_accumulator",
    "probe_metrics",
]

EPS = 1e-7

ProbeMode = Literal["linear", "knn"]
"""The study modes that fit a probe on frozen features."""


@dataclass(frozen=True)
class LabelledFeatures:
    """Features and targets of one split.

    Attributes:
        features: ``(N, D)`` float32.
        targets: ``(N,)`` int64 class indices, or ``(N, C)`` float32 of 1 / 0 / NaN (multilabel).
    """

    features: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def take(self, indices: Sequence[int] | np.ndarray) -> LabelledFeatures:
        """The rows at ``indices``."""
        index = np.asarray(indices, dtype=np.int64)
        return LabelledFeatures(self.features[index], self.targets[index])


def labelled_features(features: np.ndarray, records: Sequence[Record]) -> LabelledFeatures:
    """Pair features with the records' class labels (classification) or per-class labels (multilabel)."""
    if records and records[0].labels is not None:
        targets = np.array([r.labels for r in records], dtype=np.float32)
    else:
        targets = np.array([r.label for r in records], dtype=np.int64)
    return LabelledFeatures(features, targets)


def probe_metrics(task: TaskType, probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The task's metrics for predicted probabilities ``(N, C)`` against ``targets``."""
    return probe_accumulator(task, probabilities, targets).compute()


def probe_accumulator(task: TaskType, probabilities: np.ndarray, targets: np.ndarray) -> TaskMetrics:
    """The task's metric accumulator holding predicted probabilities ``(N, C)`` and ``targets``
    (its ``compute()`` gives the metrics, its ``items()`` the per-item results)."""
    p = np.clip(probabilities, EPS, 1 - EPS)
    # the task metrics take logits: log p for the softmax of classification, logit p for the sigmoid
    logits = np.log(p) if targets.ndim == 1 else np.log(p) - np.log1p(-p)
    metrics = task.metrics()
    metrics.update(torch.from_numpy(logits), torch.from_numpy(targets))
    return metrics


class ProbeConfig(BaseModel):
    """Frozen-feature probes (``linear`` and ``knn`` modes) and the feature extraction they use.

    Args:
        c_values: Inverse regularisation strengths of the logistic regression, one chosen per
            cell on the validation split.
        max_iter: L-BFGS iterations per logistic-regression fit.
        k: Neighbours of the kNN vote.
        temperature: Softness of the kNN vote weights ``exp(cosine similarity / temperature)``.
        class_weight: ``balanced``: every class weighs the same in the logistic regression's
            loss, in the choice of ``C`` and in the kNN vote (each sample weighted by the
            inverse of its class's training frequency), so a rare class is not outvoted by
            the majority; ``none``: every sample weighs the same.
        feature_levels: Pyramid levels whose globally pooled maps are concatenated into the
            features (``-1``: the deepest; e.g. ``[-2, -1]`` adds the one above, as DINO's
            linear evaluation concatenates several blocks).
        feature_level_choices: Candidate ``feature_levels``, e.g. ``[[0], [1], [-3, -2, -1]]``;
            when given, every ``linear`` or ``knn`` cell of a study fits its probe on each
            candidate's pooled features and keeps the one whose probe has the lowest validation
            log-loss (``feature_levels`` is then not used), as DINOv2's linear evaluation picks
            the blocks it concatenates on validation; each encoder and cell chooses for itself,
            and ``results.csv`` names the levels chosen (``level_choice``).
        batch_size: Images per forward pass when extracting features.
        num_workers: DataLoader workers decoding images for extraction.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    c_values: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0], min_length=1
    )
    max_iter: int = Field(default=200, ge=1)
    k: int = Field(default=20, ge=1)
    temperature: float = Field(default=0.07, gt=0)
    class_weight: Literal["balanced", "none"] = "balanced"
    feature_levels: list[int] = Field(default_factory=lambda: [-1], min_length=1)
    feature_level_choices: list[Annotated[list[int], Field(min_length=1)]] = Field(default_factory=list)
    batch_size: int = Field(default=64, ge=1)
    num_workers: int = Field(default=0, ge=0)


class LinearProbe:
    """Standardised features, then logistic regression with ``C`` chosen on the validation split.

    Classification: one multinomial model. Multilabel: one binary model per class, fitted on
    the entries labelled for that class (a class with a single value in the training subset
    predicts that value's frequency). ``C`` (inverse regularisation) is the grid value with the
    lowest validation log-loss (mean cross-entropy over labelled entries); ties go to the
    smaller ``C`` (stronger regularisation). Log-loss rather than accuracy or AUROC: it is a
    proper score that separates grid values where small validation sets tie on accuracy, and
    it costs microseconds where the task metrics cost milliseconds per grid value.

    With ``class_weight="balanced"`` the fit weighs each class equally (scikit-learn's
    ``class_weight="balanced"``) and so does the validation log-loss: on an imbalanced task the
    unweighted model at strong regularisation predicts the majority class for every image,
    whatever the features (balanced accuracy 0.5), which measures the threshold, not the features.

    Args:
        task: The task (for its number of classes and ``probe_targets``).
        c_values: Grid of ``C``, tried in increasing order with warm starts.
        max_iter: L-BFGS iterations per fit.
        class_weight: ``balanced`` or ``none`` (see ``ProbeConfig``).

    Attributes:
        chosen_c: The selected ``C`` after ``fit``.
    """

    def __init__(
        self, task: TaskType, c_values: Sequence[float], *, max_iter: int = 200, class_weight: str = "none"
    ) -> None:
        self.task = task
        self.c_values = sorted(c_values)
        self.max_iter = max_iter
        self.balanced = class_weight == "balanced"
        self.chosen_c = math.nan
        self._scaler = StandardScaler()
        self._models: list[LogisticRegression | DummyClassifier] = []

    def fit(self, train: LabelledFeatures, val: LabelledFeatures) -> LinearProbe:
        x_train = self._scaler.fit_transform(train.features)
        x_val = self._scaler.transform(val.features)
        best_loss, best_models = math.inf, None
        weight = "balanced" if self.balanced else None
        models = [
            LogisticRegression(max_iter=self.max_iter, warm_start=True, class_weight=weight)
            for _ in self._columns(train)
        ]
        with _single_threaded_blas(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for c in self.c_values:
                fitted = [
                    self._fit_column(m, c, x_train, y)
                    for m, y in zip(models, self._columns(train), strict=True)
                ]
                self._models = fitted
                loss = log_loss(self._predict(x_val), val.targets, balanced=self.balanced)
                if loss < best_loss or best_models is None:
                    # a copy: the grid goes on warm-starting the originals
                    best_loss, best_models, self.chosen_c = loss, copy.deepcopy(fitted), c
        self._models = best_models or []
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C)``."""
        with _single_threaded_blas():
            return self._predict(self._scaler.transform(features))

    def _columns(self, data: LabelledFeatures) -> list[np.ndarray]:
        """One target vector per model: the labels, or each class's column (multilabel)."""
        return [data.targets] if data.targets.ndim == 1 else list(data.targets.T)

    def _fit_column(
        self, model: LogisticRegression, c: float, x: np.ndarray, y: np.ndarray
    ) -> LogisticRegression | DummyClassifier:
        labelled = ~np.isnan(y) if y.dtype.kind == "f" else np.ones(len(y), dtype=bool)
        x, y = x[labelled], y[labelled].astype(np.int64)
        if np.unique(y).size < 2:  # nothing to separate: predict the value seen
            if y.size == 0:  # no labels at all for this class: predict 1/2
                x, y = np.zeros((2, x.shape[1])), np.array([0, 1])
            return DummyClassifier(strategy="prior").fit(x, y)
        model.set_params(C=c)
        return model.fit(x, y)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.task.probe_targets == "each_class":
            return np.stack([_positive_probability(m, x) for m in self._models], axis=1)
        (model,) = self._models
        probabilities = np.zeros((x.shape[0], self.task.spec.num_classes), dtype=np.float64)
        probabilities[:, model.classes_] = model.predict_proba(x)  # classes absent from training stay 0
        return probabilities


class KNNProbe:
    """Cosine k-nearest-neighbour vote, each neighbour weighted by ``exp(similarity / T)`` [0, 1].

    Classification: the weighted share of the ``k`` neighbours in each class. Multilabel: per
    class, the weighted mean of the neighbours' labels for that class, ignoring neighbours
    without one (the training frequency when none has one). The weights matter when the
    training subset is not much larger than ``k``: a uniform vote over all of a small subset is
    its class frequency for every query, whatever the features. With ``class_weight="balanced"``
    each neighbour's vote is further divided by its class's training frequency (per class and
    value for multilabel), so that the majority class does not win every close vote.

    Args:
        task: The task (for its number of classes).
        k: Neighbours (at most the number of training samples).
        temperature: ``T``; small values trust the nearest neighbours most.
        class_weight: ``balanced`` or ``none`` (see ``ProbeConfig``).

    [0] Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018.
    [1] Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021
        (k = 20, T = 0.07).
    """

    def __init__(
        self, task: TaskType, *, k: int = 20, temperature: float = 0.07, class_weight: str = "none"
    ) -> None:
        self.task = task
        self.k = k
        self.temperature = temperature
        self.balanced = class_weight == "balanced"
        self._train: LabelledFeatures | None = None
        self._index: NearestNeighbors | None = None

    def fit(self, train: LabelledFeatures) -> KNNProbe:
        self._train = train
        self._index = NearestNeighbors(
            n_neighbors=min(self.k, len(train)), metric="cosine", algorithm="brute"
        )
        self._index.fit(train.features)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C)``."""
        if self._train is None or self._index is None:
            raise RuntimeError("KNNProbe.predict called before fit")
        with _single_threaded_blas():
            distances, neighbours = self._index.kneighbors(features)  # (N, k): 1 - cosine similarity
        # shifted by the nearest neighbour's weight, which cancels in the normalisation below
        weights = np.exp((distances[:, :1] - distances) / self.temperature)[..., None]  # (N, k, 1)
        targets = self._train.targets
        if targets.ndim == 1:
            votes = np.eye(self.task.spec.num_classes)[targets[neighbours]]  # (N, k, C)
            if self.balanced:
                votes = votes / np.maximum(np.bincount(targets, minlength=votes.shape[2]), 1)
            shares: np.ndarray = (weights * votes).sum(axis=1) / (weights * votes).sum(axis=(1, 2))[:, None]
            return shares
        votes = targets[neighbours]  # (N, k, C), NaN where a neighbour has no label
        labelled = ~np.isnan(votes)
        # balanced: a neighbour's vote for a class counts 1 / (training count of its value)
        positives, negatives = np.nansum(targets == 1, axis=0), np.nansum(targets == 0, axis=0)
        if self.balanced:
            value_weight = np.where(votes == 1, 1 / np.maximum(positives, 1), 1 / np.maximum(negatives, 1))
        else:
            value_weight = np.ones_like(votes)
        total = (weights * labelled * value_weight).sum(axis=1)
        mean = (weights * np.nan_to_num(votes) * value_weight).sum(axis=1) / np.maximum(total, 1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column has no frequency
            prior = np.nan_to_num(np.nanmean(targets, axis=0), nan=0.5)
        filled: np.ndarray = np.where(total > 0, mean, prior)
        return filled


def fit_probe(
    mode: ProbeMode,
    task: TaskType,
    train: LabelledFeatures,
    val: LabelledFeatures,
    cfg: ProbeConfig,
) -> LinearProbe | KNNProbe:
    """The probe of a ``linear`` or ``knn`` mode, fitted with ``cfg``'s settings (``val`` chooses
    the logistic regression's ``C``; the kNN does not read it)."""
    if mode == "linear":
        return LinearProbe(task, cfg.c_values, max_iter=cfg.max_iter, class_weight=cfg.class_weight).fit(
            train, val
        )
    return KNNProbe(task, k=cfg.k, temperature=cfg.temperature, class_weight=cfg.class_weight).fit(train)


def log_loss(probabilities: np.ndarray, targets: np.ndarray, balanced: bool = False) -> float:
    """Mean cross-entropy of probabilities ``(N, C)``: of the true class (classification), or the
    binary cross-entropy of each labelled entry (multilabel; NaN entries left out).

    ``balanced``: each class (each class's positive and negative entries, multilabel) weighs the
    same, whatever its frequency: the mean of the per-class mean losses.

    Written here because ``sklearn.metrics.log_loss`` takes neither missing labels nor classes
    absent from the predictions, and validates its input for longer than a small probe fits.
    """
    p = np.clip(probabilities, EPS, 1 - EPS)
    if targets.ndim == 1:
        if not len(targets):
            return math.nan
        losses = -np.log(p[np.arange(len(targets)), targets])
        group = targets
    else:
        labelled = ~np.isnan(targets)
        t, q = targets[labelled], p[labelled]
        if not t.size:
            return math.nan
        losses = -(t * np.log(q) + (1 - t) * np.log1p(-q))
        group = np.nonzero(labelled)[1] * 2 + t.astype(np.int64)  # (class, value) of each entry
    if not balanced:
        return float(losses.mean())
    return float(np.mean([losses[group == g].mean() for g in np.unique(group)]))


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """Found once: scanning the loaded libraries (~5 ms) costs more than fitting a small probe."""
    return ThreadpoolController()


def _single_threaded_blas() -> Any:
    return _blas_controller().limit(limits=1, user_api="blas")


def _positive_probability(model: LogisticRegression | DummyClassifier, x: np.ndarray) -> np.ndarray:
    classes = list(model.classes_)
    return model.predict_proba(x)[:, classes.index(1)] if 1 in classes else np.zeros(x.shape[0])

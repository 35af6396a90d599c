"""Weighted scores against the field's implementations: a row of integer weights must give what
scikit-learn, torchmetrics or pycocotools give on the items repeated that often (a bootstrap
resample), and a row of ones the plain score."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from torchmetrics.functional.classification import multiclass_calibration_error

from medfoundry.tasks import TaskSpec, build_task
from medfoundry.tasks.detection_metrics import DetectionMetrics
from medfoundry.tasks.scores import (
    weighted_balanced_accuracy,
    weighted_ece,
    weighted_macro_auroc,
)
from tests.packaged import package_folder


def _resamples(n: int, rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(rows)]).astype(float)


def _classification_items(n: int = 60, classes: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    logits[:5] = np.round(logits[:5])  # some tied scores
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"probabilities": probabilities.astype(np.float32), "labels": labels}


def test_classification_scores_equal_scikit_learn_and_torchmetrics_on_repeated_items() -> None:
    items = _classification_items()
    probabilities, labels = items["probabilities"], items["labels"]
    weights = _resamples(len(labels), 5)
    metrics = build_task(
        TaskSpec(name="t", type="classification", classes=list("abcd"), source={"path": "x.csv"})
    ).metrics()
    scores = metrics.score_items(items, weights)
    for b, row in enumerate(weights):
        repeat = np.repeat(np.arange(len(labels)), row.astype(int))
        p, y = probabilities[repeat], labels[repeat]
        onehot = np.eye(4)[y]
        assert scores["accuracy"][b] == pytest.approx(accuracy_score(y, p.argmax(1)))
        assert scores["balanced_accuracy"][b] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
        auroc = np.mean([roc_auc_score(onehot[:, c], p[:, c]) for c in range(4)])
        assert scores["auroc"][b] == pytest.approx(auroc)
        ece = multiclass_calibration_error(torch.from_numpy(p), torch.from_numpy(y), 4, n_bins=15)
        assert scores["ece"][b] == pytest.approx(float(ece), abs=1e-6)
        # the same with scikit-learn's sample weights instead of repetition
        assert weighted_balanced_accuracy(labels, probabilities.argmax(1), 4, weights=row[None])[
            0
        ] == pytest.approx(balanced_accuracy_score(labels, probabilities.argmax(1), sample_weight=row))


def test_unit_weights_give_compute() -> None:
    task = build_task(TaskSpec(name="t", type="classification", classes=list("abcd"), source={"path": "x"}))
    metrics = task.metrics()
    items = _classification_items()
    metrics.update(torch.from_numpy(np.log(items["probabilities"])), torch.from_numpy(items["labels"]))
    again = metrics.score_items(metrics.items(), np.ones((1, 60)))
    assert metrics.compute() == {k: float(v[0]) for k, v in again.items()}


def test_auroc_with_missing_labels_and_a_class_absent_from_a_row() -> None:
    targets = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0], [1, np.nan]], dtype=float)
    scores = np.array([[0.9, 0.2], [0.1, 0.5], [0.8, 0.7], [0.3, 0.1], [0.3, 0.9]])
    weights = np.array([[1, 1, 1, 1, 1], [0, 0, 2, 1, 0], [0, 0, 1, 0, 1.0]])
    result = weighted_macro_auroc(targets, scores, weights)
    assert result[0] == pytest.approx((roc_auc_score([1, 0, 1, 0, 1], scores[:, 0]) + 1.0) / 2)
    assert result[1] == pytest.approx(1.0)  # column 1 has its positive and its negative
    assert math.isnan(result[2])  # only positives weighted: AUROC undefined in every column


def test_ece_bins_like_torchmetrics_at_bin_edges() -> None:
    confidence = np.array([0.2, 0.4, 1.0, 1 / 15, 14 / 15], dtype=np.float32)
    correct = np.array([1, 0, 1, 1, 0], dtype=bool)
    p = np.stack([confidence, 1 - confidence], axis=1)
    y = np.where(correct, 0, 1)
    expected = multiclass_calibration_error(torch.from_numpy(p), torch.from_numpy(y), 2, n_bins=15)
    assert weighted_ece(confidence, correct, np.ones((1, 5)))[0] == pytest.approx(float(expected), abs=1e-6)


def test_segmentation_dice_from_per_image_counts() -> None:
    task = build_task(
        TaskSpec(name="s", type="segmentation", classes=["bg", "a", "b"], source={"path": "x.csv"})
    )
    rng = np.random.default_rng(1)
    targets = torch.from_numpy(rng.integers(0, 3, (4, 8, 8)))
    targets[0, 0, :3] = 255  # unlabelled pixels count nowhere
    logits = torch.from_numpy(rng.normal(size=(4, 3, 8, 8))) + 2 * torch.nn.functional.one_hot(
        targets.clamp(max=2), 3
    ).permute(0, 3, 1, 2)
    metrics = task.metrics()
    metrics.update(logits, targets)
    items = metrics.items()
    assert items["counts"].shape == (4, 3, 3)
    twice_first = metrics.score_items(items, np.array([[2.0, 1, 1, 0]]))
    repeated = task.metrics()
    repeated.update(logits[[0, 0, 1, 2]], targets[[0, 0, 1, 2]])
    assert {k: float(v[0]) for k, v in twice_first.items()} == pytest.approx(repeated.compute())


def _nuclei_boxes() -> list[np.ndarray]:
    """Bounding boxes of the nuclei in the four quadrants of stardist's real instance mask."""
    mask = tifffile.imread(package_folder("stardist") / "data" / "images" / "mask2d.tif")
    images = []
    for top in (0, 256):
        for left in (0, 256):
            tile = mask[top : top + 256, left : left + 256]
            boxes = []
            for value in np.unique(tile)[1:]:
                ys, xs = np.nonzero(tile == value)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            images.append(np.array(boxes, dtype=np.float32))
    return images


def test_detection_map_from_items_equals_pycocotools_on_real_boxes_and_resamples() -> None:
    rng = np.random.default_rng(0)
    truths, detections = [], []
    for boxes in _nuclei_boxes():
        labels = rng.integers(0, 2, len(boxes))  # two classes, to exercise per-class matching
        found = boxes + rng.normal(0, 2.5, boxes.shape).astype(np.float32)  # IoUs spread over 0.5-0.95
        keep = rng.random(len(boxes)) > 0.15  # some nuclei missed
        false = rng.uniform(0, 230, (6, 2)).astype(np.float32)
        found = np.concatenate([found[keep], np.concatenate([false, false + 20], axis=1)])
        found_labels = np.concatenate([labels[keep], rng.integers(0, 2, 6)])
        scores = rng.random(len(found)).astype(np.float32)
        truths.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
        detections.append(
            {
                "boxes": torch.from_numpy(found),
                "scores": torch.from_numpy(scores),
                "labels": torch.from_numpy(found_labels),
            }
        )
    metrics = DetectionMetrics(lambda outputs: outputs, num_classes=2)
    metrics.update(detections, truths)
    items = metrics.items()
    weights = np.vstack([np.ones(4), [2.0, 0, 1, 1], [0, 1, 3, 0]])
    scores = metrics.score_items(items, weights)
    for b, row in enumerate(weights):
        repeat = np.repeat(np.arange(4), row.astype(int)).tolist()
        reference = DetectionMetrics(lambda outputs: outputs, num_classes=2)
        reference.update([detections[i] for i in repeat], [truths[i] for i in repeat])
        expected = reference.compute()
        assert 0.2 < expected["map_50"] < 0.95 and expected["map"] < expected["map_50"]
        assert scores["map_50"][b] == pytest.approx(expected["map_50"], abs=1e-7)  # torchmetrics: float32
        assert scores["map"][b] == pytest.approx(expected["map"], abs=1e-7)


def test_chance_levels_come_from_the_test_items(tmp_path: Path) -> None:
    task = build_task(TaskSpec(name="t", type="classification", classes=list("abcd"), source={"path": "x"}))
    items = {"probabilities": np.full((4, 4), 0.25, np.float32), "labels": np.array([0, 0, 0, 2])}
    assert task.metrics().chance(items) == {"accuracy": 0.75, "balanced_accuracy": 0.5, "auroc": 0.5}

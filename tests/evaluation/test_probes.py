"""Linear probe and kNN on synthetic features: selection on validation, missing classes and labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfoundry.evaluation.probes import KNNProbe, LabelledFeatures, LinearProbe, log_loss, probe_metrics
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.tasks.task_type import TaskType


def _task(kind: str = "classification", classes: int = 3) -> TaskType:
    spec = TaskSpec(name="t", type=kind, classes=[f"c{i}" for i in range(classes)], source={"path": "t.csv"})
    return build_task(spec)


def _blobs(n_per_class: int, classes: int, seed: int, spread: float = 0.3) -> LabelledFeatures:
    """Well separated Gaussian blobs in 16 dimensions, one per class."""
    rng = np.random.default_rng(seed)
    centers = np.eye(classes, 16) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    x = centers[y] + spread * rng.normal(size=(len(y), 16))
    return LabelledFeatures(x.astype(np.float32), y)


def test_linear_probe_separates_blobs_and_reports_task_metrics() -> None:
    task = _task()
    probe = LinearProbe(task, [0.01, 1.0]).fit(_blobs(20, 3, 0), _blobs(5, 3, 1))
    test = _blobs(10, 3, 2)
    metrics = probe_metrics(task, probe.predict(test.features), test.targets)
    assert metrics.pop("ece") < 0.2  # confident and right: well calibrated
    assert metrics == {"accuracy": 1.0, "balanced_accuracy": 1.0, "auroc": 1.0}
    assert probe.chosen_c == 1.0  # both are perfect; the weaker regularisation is surer: lower log-loss


def test_linear_probe_chooses_c_by_validation_log_loss() -> None:
    # few samples, many noise dimensions: the regularisation strength matters on validation
    task = _task(classes=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 64)).astype(np.float32)
    y = (x[:, 0] + 0.8 * rng.normal(size=80) > 0).astype(np.int64)
    train, val = LabelledFeatures(x[:20], y[:20]), LabelledFeatures(x[20:], y[20:])
    grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    losses = {
        c: log_loss(LinearProbe(task, [c]).fit(train, val).predict(val.features), val.targets) for c in grid
    }
    assert len(set(np.round(list(losses.values()), 6))) == len(grid)
    assert LinearProbe(task, grid).fit(train, val).chosen_c == min(grid, key=lambda c: (losses[c], c))


def test_log_loss_matches_scikit_learn_and_skips_missing_labels() -> None:
    from sklearn.metrics import log_loss as sklearn_log_loss

    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    assert log_loss(p, np.array([0, 2, 1])) == pytest.approx(sklearn_log_loss([0, 2, 1], p))
    q = np.array([[0.9, 0.2], [0.4, 0.6]])
    t = np.array([[1.0, np.nan], [0.0, 1.0]])
    assert log_loss(q, t) == pytest.approx(-(np.log(0.9) + np.log(0.6) + np.log(0.6)) / 3)


def test_probe_metrics_equal_the_task_metrics_on_logits() -> None:
    task = _task()
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.5, 0.0, 0.5]])
    targets = np.array([0, 2, 2, 1])
    reference = task.metrics()
    reference.update(torch.log(torch.tensor(probabilities).clamp_min(1e-7)), torch.tensor(targets))
    assert probe_metrics(task, probabilities, targets) == pytest.approx(reference.compute())


def test_class_missing_from_training_gets_zero_probability() -> None:
    task = _task(classes=3)
    train = _blobs(10, 2, 0)  # classes 0 and 1 only
    probe = LinearProbe(task, [1.0]).fit(train, train)
    probabilities = probe.predict(_blobs(2, 3, 1).features)
    assert probabilities.shape == (6, 3) and np.all(probabilities[:, 2] == 0)
    assert np.allclose(probabilities.sum(axis=1), 1)
    single = LinearProbe(task, [1.0]).fit(train.take(range(10)), train)  # class 0 only
    assert np.all(single.predict(train.features)[:, 0] == 1)


def test_knn_votes_among_k_cosine_neighbours() -> None:
    task = _task(classes=2)
    # direction, not length, decides under cosine similarity
    x = np.array([[1, 0], [2, 0.1], [10, 0.5], [0, 1], [0.1, 3]], np.float32)
    train = LabelledFeatures(x, np.array([0, 0, 0, 1, 1]))
    queries = np.array([[5.0, 0.2], [0.0, 0.01]], np.float32)
    uniform = KNNProbe(task, k=3, temperature=1e6).fit(train).predict(queries)
    assert np.allclose(uniform, [[1, 0], [1 / 3, 2 / 3]], atol=1e-5)
    assert KNNProbe(task, k=20).fit(train).predict(x).shape == (5, 2)  # k capped at 5


def test_knn_weights_let_the_nearest_neighbours_decide_in_small_subsets() -> None:
    # k exceeds the training set: a uniform vote would give every query the class frequencies
    task = _task(classes=2)
    angles = np.array([0.0, 0.1, 0.2, 1.4, 1.5])
    train = LabelledFeatures(np.stack([np.cos(angles), np.sin(angles)], 1), np.array([0, 0, 0, 1, 1]))
    query = np.array([[np.cos(1.45), np.sin(1.45)]])
    weighted = KNNProbe(task, k=20).fit(train).predict(query)
    similarity = np.cos(angles - 1.45)
    expected = np.exp(similarity / 0.07) / np.exp(similarity / 0.07).sum()
    assert weighted[0, 1] == pytest.approx(expected[3:].sum()) and weighted[0, 1] > 0.99
    assert KNNProbe(task, k=20, temperature=1e6).fit(train).predict(query)[0, 1] == pytest.approx(0.4)


def test_multilabel_probes_ignore_missing_labels() -> None:
    task = _task("multilabel", classes=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 1] > 0)], axis=1).astype(np.float32)
    y[::3, 1] = np.nan  # a third of class 1 unlabelled
    train, test = LabelledFeatures(x[:40], y[:40]), LabelledFeatures(x[40:], y[40:])
    linear = LinearProbe(task, [0.1, 10.0]).fit(train, test)
    assert probe_metrics(task, linear.predict(test.features), test.targets)["auroc"] > 0.95
    knn = KNNProbe(task, k=5).fit(train).predict(test.features)
    assert knn.shape == (20, 2) and not np.isnan(knn).any()
    assert probe_metrics(task, knn, test.targets)["auroc"] > 0.8

    unlabelled = LabelledFeatures(
        x[:40], np.where(np.arange(2) == 1, np.nan, y[:40])
    )  # class 1 never labelled
    assert np.allclose(LinearProbe(task, [1.0]).fit(unlabelled, test).predict(x[:3])[:, 1], 0.5)
    assert math.isnan(probe_metrics(task, np.full((3, 2), 0.5), np.full((3, 2), np.nan))["auroc"])


def test_probe_config_keys_are_arguments_of_the_components() -> None:
    import inspect

    from medfoundry.evaluation.features import cached_features
    from medfoundry.evaluation.level_choice import extracted_levels
    from medfoundry.evaluation.probes import ProbeConfig

    arguments = {
        name
        for component in (LinearProbe, KNNProbe, cached_features, extracted_levels)
        for name in inspect.signature(component).parameters
    }
    assert set(ProbeConfig.model_fields) <= arguments


def _dense_tiles() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An imbalanced real task: 32-px tiles of stardist's fluorescence nuclei image, labelled
    "dense" when their nucleus share (from the instance mask) is in the top 5%; split by position."""
    import tifffile

    from tests.packaged import package_folder

    folder = package_folder("stardist") / "data" / "images"
    image = tifffile.imread(folder / "img2d.tif").astype(np.float32)
    mask = tifffile.imread(folder / "mask2d.tif")
    low, high = np.percentile(image, [1, 99.8])
    image = np.clip((image - low) / (high - low), 0, 1).astype(np.float32)
    corners = [(y, x) for y in range(0, 481, 16) for x in range(0, 481, 16)]
    tiles = np.stack([image[y : y + 32, x : x + 32] for y, x in corners])
    share = np.array([(mask[y : y + 32, x : x + 32] > 0).mean() for y, x in corners])
    labels = (share > np.quantile(share, 0.95)).astype(np.int64)
    x = np.array([x for _, x in corners])
    split = np.where(x < 320, "train", np.where(x < 400, "val", "test"))
    return tiles, labels, split


@pytest.mark.integration
def test_balanced_probes_beat_the_majority_answer_where_unweighted_ones_do_not() -> None:
    from medfoundry.evaluation import load_encoder

    torch.manual_seed(0)
    tiles, labels, split = _dense_tiles()
    encoder = load_encoder("resnet10t", pretrained=False, image_size=32)  # seeded random weights
    features = encoder.embed(torch.from_numpy(tiles)[:, None].repeat(1, 3, 1, 1)).numpy()
    data = {s: LabelledFeatures(features[split == s], labels[split == s]) for s in ("train", "val", "test")}
    assert 0.03 < data["test"].targets.mean() < 0.07  # 5% positives
    task = _task(classes=2)
    scores: dict[tuple[str, str], list[dict[str, float]]] = {}
    for seed in range(3):  # 60 labelled tiles, as a 10% fraction would give
        train = data["train"].take(np.random.default_rng(seed).permutation(len(data["train"]))[:60])
        for weight in ("none", "balanced"):
            linear = LinearProbe(task, [1e-3, 1e-2, 1e-1, 1.0, 10.0], class_weight=weight).fit(
                train, data["val"]
            )
            knn = KNNProbe(task, k=20, temperature=0.07, class_weight=weight).fit(train)
            for mode, probe in (("linear", linear), ("knn", knn)):
                predicted = probe.predict(data["test"].features)
                scores.setdefault((mode, weight), []).append(
                    probe_metrics(task, predicted, data["test"].targets)
                )

    def mean(mode: str, weight: str, metric: str = "balanced_accuracy") -> float:
        return float(np.mean([s[metric] for s in scores[mode, weight]]))

    # unweighted, the kNN vote answers "sparse" for every tile: the majority answer, 0.5
    assert all(s["balanced_accuracy"] == 0.5 for s in scores["knn", "none"])
    # and the unweighted linear probe is barely above it, while its ranking (AUROC) is good:
    # it measures the threshold, not the features
    assert mean("linear", "none") < 0.7 and mean("linear", "none", "auroc") > 0.9
    for mode in ("linear", "knn"):
        assert all(s["balanced_accuracy"] > 0.6 for s in scores[mode, "balanced"])
        assert mean(mode, "balanced") > mean(mode, "none") + 0.15
    assert abs(mean("linear", "balanced", "auroc") - mean("linear", "none", "auroc")) < 0.05

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medfoundry.errors import ConfigError
from medfoundry.tasks import ClassificationTask, TaskSpec


def _task(classes: list[str], **options: object) -> ClassificationTask:
    return ClassificationTask(
        TaskSpec(name="t", type="classification", classes=classes, source={"path": "x.csv"}, options=options)
    )


@pytest.mark.parametrize("num_classes", [2, 3, 10])
def test_loss_is_one_at_chance(num_classes: int) -> None:
    task = _task([str(i) for i in range(num_classes)])
    targets = torch.randint(0, num_classes, (32,))
    assert task.loss(torch.zeros(32, num_classes), targets).item() == pytest.approx(1.0)
    confident = torch.nn.functional.one_hot(targets, num_classes).float() * 20
    assert task.loss(confident, targets).item() < 1e-3


def test_metrics_match_hand_computed_values() -> None:
    task = _task(["a", "b", "c"])
    metrics = task.metrics()
    logits = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]])
    targets = torch.tensor([0, 1, 0, 2, 0])
    metrics.update(logits[:2], targets[:2])
    metrics.update(logits[2:], targets[2:])
    result = metrics.compute()
    assert result["accuracy"] == pytest.approx(4 / 5)
    # recall per class: a 2/3, b 1/1, c 1/1
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    probs = logits.softmax(1).numpy()
    onehot = np.eye(3)[targets.numpy()]
    expected = np.mean([roc_auc_score(onehot[:, c], probs[:, c]) for c in range(3)])
    assert result["auroc"] == pytest.approx(expected)


def test_auroc_skips_classes_absent_from_the_split() -> None:
    metrics = _task(["a", "b", "c"]).metrics()
    metrics.update(torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]), torch.tensor([0, 1]))
    assert metrics.compute()["auroc"] == pytest.approx(1.0)
    assert math.isnan(_task(["a", "b"]).metrics().compute()["accuracy"])


def test_bad_specs() -> None:
    with pytest.raises(ConfigError, match="needs at least 2 classes"):
        _task(["only"])
    with pytest.raises(
        ConfigError, match=r"task 't': options.smoothing: unknown key \(valid options: label_smoothing\)"
    ):
        _task(["a", "b"], smoothing=0.1)

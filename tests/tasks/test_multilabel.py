from __future__ import annotations

import math

import pytest
import torch

from medfoundry.tasks import MultilabelTask, TaskSpec

NAN = math.nan


def _task() -> MultilabelTask:
    return MultilabelTask(
        TaskSpec(name="m", type="multilabel", classes=["x", "y", "z"], source={"path": "m.csv"})
    )


def test_loss_is_one_at_chance_and_ignores_missing_entries() -> None:
    task = _task()
    targets = torch.tensor([[1.0, 0.0, NAN], [NAN, 1.0, 0.0]])
    assert task.loss(torch.zeros(2, 3), targets).item() == pytest.approx(1.0)
    # whatever the logits on missing entries are, the loss does not change
    logits = torch.tensor([[5.0, -5.0, 0.0], [0.0, 5.0, -5.0]])
    wild = logits.clone()
    wild[0, 2], wild[1, 0] = 1e4, -1e4
    assert task.loss(wild, targets).item() == pytest.approx(task.loss(logits, targets).item())
    wild.requires_grad_(True)
    task.loss(wild, targets).backward()
    assert wild.grad is not None and wild.grad[0, 2] == 0 and wild.grad[1, 0] == 0


def test_batch_without_any_label_gives_zero_loss_with_a_graph() -> None:
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = _task().loss(logits, torch.full((2, 3), NAN))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_metrics_use_labelled_entries_only() -> None:
    metrics = _task().metrics()
    logits = torch.tensor([[2.0, -2.0, 9.0], [-2.0, 2.0, 9.0], [2.0, 2.0, -9.0]])
    targets = torch.tensor([[1.0, 0.0, NAN], [0.0, 1.0, NAN], [NAN, 1.0, 0.0]])
    metrics.update(logits, targets)
    result = metrics.compute()
    # x: labels 1,0 ranked right; y: 0,1,1 ranked right; z: only one label (0) -> no AUROC
    assert result["auroc"] == pytest.approx(1.0)
    assert result["accuracy"] == pytest.approx(1.0)

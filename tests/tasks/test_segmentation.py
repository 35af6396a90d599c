from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfoundry.errors import ConfigError
from medfoundry.tasks import SegmentationTask, TaskSpec


def _task(classes: list[str] | None = None, **options: object) -> SegmentationTask:
    classes = classes or ["background", "a", "b"]
    return SegmentationTask(
        TaskSpec(name="s", type="segmentation", classes=classes, source={"path": "s.csv"}, options=options)
    )


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_loss_is_about_one_at_chance_and_near_zero_when_perfect(num_classes: int) -> None:
    task = _task([str(i) for i in range(num_classes)])
    targets = torch.randint(0, num_classes, (2, 16, 16))
    chance = task.loss(torch.zeros(2, num_classes, 16, 16), targets).item()
    # focal term is exactly 1 at chance; dice term is 1 - mean dice (about 1 - 1/C here)
    assert 0.5 * (1 + (1 - 1 / num_classes)) == pytest.approx(chance, abs=0.05)
    perfect = torch.nn.functional.one_hot(targets, num_classes).permute(0, 3, 1, 2).float() * 30
    assert task.loss(perfect, targets).item() < 0.05


def test_ignored_pixels_change_nothing() -> None:
    task = _task(ignore_index=255)
    logits = torch.randn(1, 3, 8, 8)
    targets = torch.randint(0, 3, (1, 8, 8))
    partial = targets.clone()
    partial[0, :4] = 255
    other = logits.clone()
    other[0, :, :4] = torch.randn(3, 4, 8) * 100  # anything at ignored pixels
    assert task.loss(other, partial).item() == pytest.approx(task.loss(logits, partial).item())


def test_dice_metric_matches_hand_computed_values() -> None:
    task = _task()
    metrics = task.metrics()
    target = torch.tensor([[[0, 1, 1, 2], [0, 0, 2, 255]]])
    pred = torch.tensor([[[0, 1, 0, 2], [1, 0, 2, 1]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    metrics.update(logits, target)
    result = metrics.compute()
    # class a: TP 1, FP 1 (pixel (1,0)), FN 1 -> 2/4; class b: TP 2 -> 1; background: TP 2, FP 1, FN 1 -> 4/6
    assert result["dice/a"] == pytest.approx(0.5)
    assert result["dice/b"] == pytest.approx(1.0)
    assert result["dice/background"] == pytest.approx(4 / 6)
    assert result["mean_dice"] == pytest.approx(0.75)
    # of the 7 labelled pixels (255 is unlabelled): 3 background, 2 a, 2 b
    shares = [result[f"share/{c}"] for c in ("background", "a", "b")]
    assert shares == pytest.approx([3 / 7, 2 / 7, 2 / 7])


def test_a_missed_small_structure_reports_its_pixel_share() -> None:
    metrics = _task().metrics()
    target = torch.zeros(2, 20, 20, dtype=torch.long)
    target[0, :10] = 1  # class a: a large region
    target[1, 5, 5] = 2  # class b: one pixel of 800
    predicted = torch.where(target == 2, 0, target)  # b is missed
    metrics.update(torch.nn.functional.one_hot(predicted, 3).permute(0, 3, 1, 2).float(), target)
    result = metrics.compute()
    assert result["dice/b"] == 0.0 and result["share/b"] == pytest.approx(1 / 800)
    assert result["dice/a"] == 1.0 and result["share/a"] == pytest.approx(200 / 800)
    items = metrics.items()  # bootstrap resamples score the shares of their own images
    weights = np.array([[1.0, 0.0], [0.0, 2.0]])
    resampled = metrics.score_items(items, weights)
    assert resampled["share/b"] == pytest.approx([0.0, 1 / 400])


def test_class_absent_everywhere_has_undefined_dice() -> None:
    metrics = _task().metrics()
    metrics.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    result = metrics.compute()
    assert math.isnan(result["dice/a"]) and math.isnan(result["mean_dice"])
    assert np.isclose(result["dice/background"], 1.0)


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="ignore_index 1 is a class index"):
        _task(ignore_index=1)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        _task(["only"])


def test_the_data_layer_reads_the_ignore_index_from_the_task() -> None:
    assert _task(ignore_index=7).ignore_index == 7
    assert _task().ignore_index == 255

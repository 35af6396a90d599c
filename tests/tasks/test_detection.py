from __future__ import annotations

import math

import pytest
import torch
import torchmetrics.detection  # noqa: F401  # imported lazily by DetectionMetrics; ~1 s, paid at collection
from torch import nn
from torchvision.models.detection.fcos import FCOS

from medfoundry.errors import ConfigError, DataError
from medfoundry.tasks import TASK_TYPES, DetectionTask, TaskSpec
from medfoundry.tasks.detection import (
    DetectionFeatures,
    DetectionMetrics,
    DetectionOptions,
    FCOSOutput,
    fcos_loss_terms,
)
from medfoundry.tasks.fcos_targets import match_points, point_grid

STRIDES = (8, 16, 32, 64, 128)


def make_task(num_classes: int = 2, **options: object) -> DetectionTask:
    spec = TaskSpec(
        name="cells",
        type="detection",
        classes=[f"c{i}" for i in range(num_classes)],
        source={"path": "cells.csv"},
        options=options,
    )
    return DetectionTask(spec)


def target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def random_outputs(
    batch: int, num_classes: int, size: int, generator: torch.Generator, strides: tuple[int, ...] = STRIDES
) -> FCOSOutput:
    shapes = [(size // s, size // s) for s in strides]
    return FCOSOutput(
        cls_logits=[torch.randn(batch, num_classes, h, w, generator=generator) for h, w in shapes],
        box_regression=[4 * torch.rand(batch, 4, h, w, generator=generator) for h, w in shapes],
        centerness=[torch.randn(batch, 1, h, w, generator=generator) for h, w in shapes],
        strides=strides,
    )


def flatten(levels: list[torch.Tensor]) -> torch.Tensor:
    """``(B, K, H_l, W_l)`` per level -> torchvision's ``(B, sum H_l W_l, K)``."""
    return torch.cat([x.flatten(2) for x in levels], dim=2).transpose(1, 2)


def firing_outputs(
    size: int, num_classes: int, fires: list[tuple[int, int, int, int, list[float], float]]
) -> FCOSOutput:
    """One image whose head is certain of nothing but the given (level, row, col, label, box, logit)."""
    shapes = [(math.ceil(size / s), math.ceil(size / s)) for s in STRIDES]
    cls = [torch.full((1, num_classes, h, w), -20.0) for h, w in shapes]
    reg = [torch.zeros(1, 4, h, w) for h, w in shapes]
    ctr = [torch.full((1, 1, h, w), 20.0) for h, w in shapes]
    for level, row, col, label, box, logit in fires:
        stride = STRIDES[level]
        x, y = (col + 0.5) * stride, (row + 0.5) * stride
        cls[level][0, label, row, col] = logit
        reg[level][0, :, row, col] = torch.tensor([x - box[0], y - box[1], box[2] - x, box[3] - y]) / stride
    return FCOSOutput(cls, reg, ctr, STRIDES)


def test_registered_under_detection() -> None:
    assert TASK_TYPES.get("detection") is DetectionTask
    assert DetectionTask.feature == "pyramid" and DetectionTask.target == "boxes"


def test_option_defaults() -> None:
    assert make_task().options == DetectionOptions(
        center_sampling_radius=1.5,
        focal_alpha=0.25,
        focal_gamma=2.0,
        centerness_weight=0.2,
        score_thresh=0.05,
        nms_thresh=0.6,
        topk_candidates=1000,
        detections_per_img=100,
    )


@pytest.mark.parametrize("strides", [STRIDES, STRIDES[:3]])
def test_matching_and_loss_terms_equal_torchvision(strides: tuple[int, ...]) -> None:
    """Reference: torchvision 0.29.1 ``FCOS.compute_loss`` (matching) and ``FCOSHead.compute_loss``.

    torchvision's points are its anchors' centres; we give it anchors ``point -/+ stride / 2``
    centred on our points (cell centres), so both match the same locations. With three levels
    the last one's open upper bound decides the largest box's points.
    """
    size, num_classes = 512, 3
    targets = [
        # small boxes (level 0), large ones (levels 1-3), one touching the border, and one so
        # small that no point lies inside it (it stays unmatched)
        target(
            [
                [10, 12, 40, 38],
                [4, 4, 120, 100],
                [30, 20, 250, 240],
                [400, 380, 512, 512],
                [301, 301, 306, 306],
            ],
            [0, 1, 2, 1, 0],
        ),
        target([], []),  # negatives only
        # overlapping boxes, so that points have several candidates and the least area must win
        target(
            [
                [60, 60, 90, 150],
                [70, 100, 200, 130],
                [40, 40, 100, 100],
                [50, 45, 95, 110],
                [10, 20, 500, 490],
            ],
            [2, 0, 0, 1, 2],
        ),
    ]
    outputs = random_outputs(len(targets), num_classes, size, torch.Generator().manual_seed(0), strides)
    grid = point_grid([(size // s, size // s) for s in strides], strides, torch.device("cpu"))
    ours = [match_points(grid, t["boxes"], center_sampling_radius=1.5) for t in targets]

    anchors = torch.cat([grid.points - grid.strides[:, None] / 2, grid.points + grid.strides[:, None] / 2], 1)
    head_outputs = {
        "cls_logits": flatten(outputs.cls_logits),
        "bbox_regression": flatten(outputs.box_regression),
        "bbox_ctrness": flatten(outputs.centerness),
    }
    backbone = nn.Identity()
    backbone.out_channels = 32  # type: ignore[assignment]  # its head (unused here) needs 32k
    reference = FCOS(backbone, num_classes=num_classes, center_sampling_radius=1.5)
    matched: list[list[torch.Tensor]] = []
    head_loss = reference.head.compute_loss

    def spy(*args: object) -> dict[str, torch.Tensor]:
        matched.append(args[3])  # type: ignore[arg-type]
        return head_loss(*args)  # type: ignore[arg-type]

    reference.head.compute_loss = spy  # type: ignore[method-assign]
    expected = reference.compute_loss(targets, head_outputs, [anchors] * len(targets), grid.num_per_level)

    for mine, theirs in zip(ours, matched[0], strict=True):
        torch.testing.assert_close(mine, theirs)
    # the case exercises what it should: all boxes but the tiny one matched, levels 0-3, ties
    assert [len(m[m >= 0].unique()) for m in ours] == [4, 0, 5]
    level_of_point = torch.repeat_interleave(torch.arange(len(strides)), torch.tensor(grid.num_per_level))
    assert set(level_of_point.repeat(len(ours))[torch.cat(ours) >= 0].tolist()) == set(
        range(min(4, len(strides)))
    )
    boxes = targets[2]["boxes"]
    candidates = sum(match_points(grid, boxes[i : i + 1], center_sampling_radius=1.5) >= 0 for i in range(5))
    assert (candidates >= 2).any()
    terms = fcos_loss_terms(outputs, targets)
    torch.testing.assert_close(terms.classification, expected["classification"])
    torch.testing.assert_close(terms.box_regression, expected["bbox_regression"])
    torch.testing.assert_close(terms.centerness, expected["bbox_ctrness"])


@pytest.mark.parametrize("num_classes", [1, 3])
def test_loss_at_initialisation_is_about_one(num_classes: int) -> None:
    torch.manual_seed(0)
    task = make_task(num_classes)
    head = task.build_head(32)
    # tower features after GroupNorm + ReLU
    feats = [torch.relu(torch.randn(2, 32, 256 // s, 256 // s)) for s in STRIDES]
    targets = [
        target([[10, 10, 60, 70], [100, 30, 250, 160], [20, 150, 50, 170]], [0, num_classes - 1, 0]),
        target([[40, 40, 140, 200], [180, 190, 210, 230]], [num_classes - 1, 0]),
    ]
    with torch.no_grad():
        loss = task.loss(head(DetectionFeatures(feats, feats, STRIDES)), targets)
    assert loss.item() == pytest.approx(1.0, abs=0.05)


def test_loss_without_boxes_is_finite_and_differentiable() -> None:
    task = make_task()
    head = task.build_head(16)
    feats = [torch.randn(2, 16, 64 // s + 1, 64 // s + 1) for s in STRIDES]
    for targets in ([target([], []), target([[8, 8, 40, 30]], [1])], [target([], []), target([], [])]):
        loss = task.loss(head(DetectionFeatures(feats, feats, STRIDES)), targets)
        assert torch.isfinite(loss)
        loss.backward()
        assert head.cls_logits.weight.grad is not None
        assert torch.isfinite(head.cls_logits.weight.grad).all()
    assert 0 < loss.item() < 0.01  # only easy negatives at the prior


def test_postprocess_returns_the_box_the_head_fires_at() -> None:
    task = make_task(3)
    box = [20.0, 24.0, 52.0, 44.0]
    detections = task.postprocess(firing_outputs(64, 3, [(0, 4, 4, 2, box, 20.0)]))
    assert len(detections) == 1
    torch.testing.assert_close(detections[0]["boxes"], torch.tensor([box]))
    assert detections[0]["labels"].tolist() == [2]
    assert detections[0]["scores"].item() == pytest.approx(1.0)


def test_postprocess_clips_to_the_image() -> None:
    detections = make_task().postprocess(
        firing_outputs(64, 2, [(1, 3, 3, 0, [40.0, 50.0, 70.0, 80.0], 20.0)])
    )
    torch.testing.assert_close(detections[0]["boxes"], torch.tensor([[40.0, 50.0, 64.0, 64.0]]))
    clipped = make_task().postprocess(
        firing_outputs(64, 2, [(1, 3, 3, 0, [40.0, 50.0, 70.0, 80.0], 20.0)]), image_size=(60, 62)
    )
    torch.testing.assert_close(clipped[0]["boxes"], torch.tensor([[40.0, 50.0, 62.0, 60.0]]))


def test_nms_removes_a_duplicate_of_the_same_class_only() -> None:
    task = make_task(2)
    box, near = [16.0, 16.0, 48.0, 48.0], [17.0, 16.0, 48.0, 49.0]
    fires = [(0, 3, 3, 0, box, 20.0), (0, 3, 4, 0, near, 2.0), (0, 4, 3, 1, near, 2.0)]
    detections = task.postprocess(firing_outputs(64, 2, fires))[0]
    assert detections["labels"].tolist() == [0, 1]
    torch.testing.assert_close(detections["boxes"], torch.tensor([box, near]))


def test_postprocess_drops_scores_below_threshold() -> None:
    task = make_task(2, score_thresh=0.5)
    detections = task.postprocess(firing_outputs(64, 2, [(0, 3, 3, 0, [16.0, 16.0, 48.0, 48.0], -5.0)]))
    assert detections[0]["boxes"].shape == (0, 4)


def test_metrics_of_perfect_predictions_are_one() -> None:
    task = make_task(2)
    truth = [target([[8, 8, 40, 40], [30, 20, 60, 50]], [0, 1])]
    metrics = task.metrics()
    metrics.update(
        firing_outputs(64, 2, [(0, 3, 3, 0, [8, 8, 40, 40], 20.0), (0, 4, 5, 1, [30, 20, 60, 50], 20.0)]),
        truth,
    )
    assert metrics.compute() == {"map_50": pytest.approx(1.0), "map": pytest.approx(1.0)}


def test_metrics_by_hand() -> None:
    # IoU 0.72: a hit at thresholds 0.50-0.70 (5 of the 10 COCO thresholds), a miss at 0.75-0.95
    detection = {
        "boxes": torch.tensor([[0.0, 0.0, 72.0, 100.0]]),
        "scores": torch.ones(1),
        "labels": torch.zeros(1, dtype=torch.long),
    }
    metrics = DetectionMetrics(lambda outputs: [detection])
    metrics.update(firing_outputs(64, 1, []), [target([[0, 0, 100, 100]], [0])])
    assert metrics.compute() == {"map_50": pytest.approx(1.0), "map": pytest.approx(0.5)}


def test_metrics_are_nan_with_nothing_to_score() -> None:
    metrics = make_task().metrics()
    assert all(math.isnan(v) for v in metrics.compute().values())
    metrics.update(firing_outputs(64, 2, []), [target([], [])])
    assert all(math.isnan(v) for v in metrics.compute().values())


def test_collate_targets_normalises_types_and_empty_images() -> None:
    batch = make_task().collate_targets(
        [{"boxes": [], "labels": []}, {"boxes": [[1, 2, 3, 4]], "labels": [1]}]
    )
    assert batch[0]["boxes"].shape == (0, 4) and batch[0]["labels"].dtype == torch.long
    assert batch[1]["boxes"].dtype == torch.float32


def test_collate_targets_rejects_bad_labels() -> None:
    with pytest.raises(DataError, match=r"task 'cells'.*\[0, 1\].*got \[2\]"):
        make_task(2).collate_targets([target([[1, 2, 3, 4]], [2])])
    with pytest.raises(DataError, match="2 boxes but 1 labels"):
        make_task(2).collate_targets([target([[1, 2, 3, 4], [1, 2, 3, 4]], [0])])


def test_zero_classes_is_a_config_error() -> None:
    spec = TaskSpec.model_construct(name="cells", type="detection", classes=[], source=None, options={})
    with pytest.raises(ConfigError, match=r"task 'cells': classes: detection needs at least 1 class"):
        DetectionTask(spec)


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"task 'cells': options\.nms_threshold: unknown key"):
        make_task(nms_threshold=0.5)

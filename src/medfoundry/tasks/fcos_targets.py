"""FCOS target assignment: which ground-truth box, if any, each feature-map point predicts.

A point of pyramid level ``l`` (stride ``s``) is a positive for box ``g`` when it lies inside
``g``, within ``center_sampling_radius * s`` of ``g``'s centre (centre sampling, in the
max-norm) and the largest of its four distances to ``g``'s sides is in ``(lower_l, upper_l)``
with ``[lower, upper] = [4 s, 8 s]``, the first level starting at 0 and the last open-ended
(0-64, 64-128, 128-256, 256-512, 512-inf for strides 8-128). A point matching several boxes
predicts the one of least area [0].

Written here with ``torchvision.ops`` primitives rather than reused from torchvision's FCOS
because there the matching sits inside ``FCOS.compute_loss``, which takes anchors made by its
``AnchorGenerator`` for images resized by its ``GeneralizedRCNNTransform``; our images and
pyramid come from elsewhere. ``tests/tasks/test_detection.py`` checks that the matching and the
loss terms equal torchvision 0.29.1's on the same points.

Points sit at cell centres, ``((j + 0.5) s, (i + 0.5) s)`` for cell ``(i, j)``, as in the
original code [1]; torchvision's anchors put them at ``(j s, i s)``.

[0] Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019.
[1] https://github.com/tianzhi0549/FCOS/blob/c28a9c68675291f9ba3d41e017a770b8d8f7c8d0/fcos_core/modeling/rpn/fcos/fcos.py
    (``compute_locations_per_level``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_area

__all__ = ["PointGrid", "box_distances", "centerness_targets", "decode_boxes", "match_points", "point_grid"]


@dataclass(frozen=True)
class PointGrid:
    """The points of all pyramid levels, flattened level by level, each level row-major.

    Attributes:
        points: ``(P, 2)`` float32 ``(x, y)`` in input-image pixels.
        strides: ``(P,)`` float32 stride of each point's level.
        size_ranges: ``(P, 2)`` float32 ``(lower, upper)`` bound of the box reach the point predicts.
        num_per_level: Points per level, summing to ``P``.
    """

    points: torch.Tensor
    strides: torch.Tensor
    size_ranges: torch.Tensor
    num_per_level: list[int]


def point_grid(sizes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device) -> PointGrid:
    """The points of feature maps of the given sizes.

    Args:
        sizes: ``(H_l, W_l)`` of each level, finest first.
        strides: Stride of each level in input pixels (8, 16, ...).
        device: Where the tensors go.

    Returns:
        The points, their strides and size ranges.
    """
    points, point_strides, ranges = [], [], []
    last = len(strides) - 1
    for level, ((height, width), stride) in enumerate(zip(sizes, strides, strict=True)):
        ys, xs = torch.meshgrid(
            torch.arange(height, device=device, dtype=torch.float32),
            torch.arange(width, device=device, dtype=torch.float32),
            indexing="ij",
        )
        points.append((torch.stack([xs, ys], dim=-1).reshape(-1, 2) + 0.5) * stride)
        point_strides.append(torch.full((height * width,), float(stride), device=device))
        lower = 0.0 if level == 0 else 4.0 * stride
        upper = math.inf if level == last else 8.0 * stride
        ranges.append(torch.tensor([lower, upper], device=device).expand(height * width, 2))
    return PointGrid(
        points=torch.cat(points),
        strides=torch.cat(point_strides),
        size_ranges=torch.cat(ranges),
        num_per_level=[h * w for h, w in sizes],
    )


def box_distances(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances ``(left, top, right, bottom)`` from points to box sides (negative when outside).

    Args:
        points: ``(..., 2)`` ``(x, y)``.
        boxes: ``(..., 4)`` ``(x1, y1, x2, y2)``, broadcastable against ``points``.

    Returns:
        ``(..., 4)``.
    """
    x, y = points[..., 0], points[..., 1]
    return torch.stack([x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], dim=-1)


def decode_boxes(box_regression: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Boxes from stride-normalised side distances.

    Args:
        box_regression: ``(N, 4)`` ``(left, top, right, bottom) / stride``, non-negative.
        points: ``(N, 2)`` ``(x, y)``.
        strides: ``(N,)``.

    Returns:
        ``(N, 4)`` ``(x1, y1, x2, y2)`` in pixels.
    """
    ltrb = box_regression * strides[:, None]
    return torch.cat([points - ltrb[:, :2], points + ltrb[:, 2:]], dim=1)


def centerness_targets(distances: torch.Tensor) -> torch.Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``: 1 at the box centre, 0 at a side.

    Args:
        distances: ``(N, 4)`` positive ``(left, top, right, bottom)``.

    Returns:
        ``(N,)`` in (0, 1].
    """
    left_right, top_bottom = distances[:, [0, 2]], distances[:, [1, 3]]
    ratio_x = left_right.amin(dim=1) / left_right.amax(dim=1)
    ratio_y = top_bottom.amin(dim=1) / top_bottom.amax(dim=1)
    return torch.sqrt(ratio_x * ratio_y)


def match_points(grid: PointGrid, boxes: torch.Tensor, center_sampling_radius: float) -> torch.Tensor:
    """The box each point predicts, for one image.

    Args:
        grid: The points.
        boxes: ``(M, 4)`` float ``(x1, y1, x2, y2)`` in input pixels; ``M`` may be 0.
        center_sampling_radius: In strides of the point's level.

    Returns:
        ``(P,)`` int64 index into ``boxes``, -1 for background points.
    """
    num_points = grid.points.shape[0]
    if boxes.shape[0] == 0:
        return torch.full((num_points,), -1, dtype=torch.long, device=grid.points.device)
    distances = box_distances(grid.points[:, None, :], boxes[None, :, :])  # (P, M, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    offsets = (grid.points[:, None, :] - centres[None, :, :]).abs().amax(dim=2)  # (P, M)
    reach = distances.amax(dim=2)
    candidate = (
        (offsets < center_sampling_radius * grid.strides[:, None])
        & (distances.amin(dim=2) > 0)
        & (reach > grid.size_ranges[:, :1])
        & (reach < grid.size_ranges[:, 1:])
    )
    areas = torch.where(candidate, box_area(boxes)[None, :], math.inf)
    # argmin returns the first of equal areas, so ties go to the box listed first
    return torch.where(candidate.any(dim=1), areas.argmin(dim=1), -1)

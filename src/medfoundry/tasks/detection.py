"""Object detection: an FCOS head [0] per task on the shared detection decoder's pyramid.

The shared decoder (``medfoundry.models.FCOSDecoder``) turns the encoder's pyramid into
classification and box tower features at strides 8-128; each task adds only the three
prediction convolutions of FCOS: class logits, stride-normalised side distances and centerness.

Loss: FCOS's sum ``focal + GIoU + w * centerness`` (focal summed over all points and classes,
the others averaged, all divided by the number of positive points [0, 1]) divided by its value
at chance, ``alpha (1 - pi)^gamma ln(1/pi) + 1 + w ln 2``. "Chance" is the freshly initialised
head: every class at the prior ``pi = 0.01`` (the classifier's bias), empty boxes (GIoU loss 1
for a point inside its box) and centerness 1/2 (BCE ``ln 2``); 2.26 with the default options.
One constant keeps FCOS's tuned balance between its terms. Measured at initialisation (shared
decoder and head at init, random encoder features, batches of 4 images with 2-5 boxes of
16-150 px each, 5 seeds): 0.98 (0.97-1.00) for C = 1, 1.00 (0.98-1.02) for C = 3 and 1.00 for
C = 10, alike at 256 and 512 px. The classification-style alternative ``focal / ln(C + 1) +
GIoU + w * centerness`` (the cross-entropy normalisation of [2], background counted as a class)
measured 2.72, 1.96 and 1.61 on the same batches: the focal term at the prior is about 1.1 whatever C
(negatives add ~1e-6 per point and class), so dividing it by ``ln(C + 1)`` only makes tasks
with few classes weigh more.
Images without boxes contribute only negatives (the sums are divided by ``max(1, positives)``).

Metrics: COCO mAP@0.5 (``map_50``) and mAP@[.5:.95] (``map``) over the split, via torchmetrics'
``MeanAveragePrecision`` on the pycocotools backend (which scores at most 100 detections per
image); NaN when the split has no boxes.

[0] Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019.
[1] torchvision 0.29.1, ``torchvision/models/detection/fcos.py`` (``FCOSHead.compute_loss``).
[2] Schäfer et al., Nature Computational Science 4, 495-509 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchvision.ops import batched_nms, clip_boxes_to_image, generalized_box_iou_loss, sigmoid_focal_loss

from medfoundry.data.record import TargetKind
from medfoundry.errors import ConfigError, DataError
from medfoundry.tasks.detection_metrics import DetectionMetrics
from medfoundry.tasks.fcos_targets import (
    box_distances,
    centerness_targets,
    decode_boxes,
    match_points,
    point_grid,
)
from medfoundry.tasks.options import parse_options
from medfoundry.tasks.predictions import BoxPredictions
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import EvaluationMode, FeatureKind, ProbeTargets

__all__ = [
    "MAX_LEVELS",
    "DetectionFeatures",
    "DetectionMetrics",
    "DetectionTask",
    "FCOSHead",
    "FCOSLossTerms",
    "FCOSOutput",
    "fcos_loss_terms",
]

PRIOR_PROBABILITY = 0.01
"""Initial foreground probability of every class at every point (FCOS/RetinaNet's prior)."""

MAX_LEVELS = 5
"""FCOS's pyramid levels P3-P7 (strides 8-128); a head has a box scale for each."""

BoxTarget = dict[str, torch.Tensor]
"""One image's boxes: ``boxes`` ``(N, 4)`` float32 xyxy in input pixels, ``labels`` ``(N,)`` int64;
detections add ``scores`` ``(N,)`` float32."""


class DetectionOptions(BaseModel):
    """Options of a detection task.

    Args:
        center_sampling_radius: Positives lie within this many strides of a box centre.
        focal_alpha: Weight of positives in the focal loss, in [0, 1].
        focal_gamma: Focusing parameter of the focal loss (0 gives alpha-weighted cross-entropy).
        centerness_weight: Weight of the centerness loss relative to focal and GIoU.
        score_thresh: Detections scoring at most this are dropped before NMS.
        nms_thresh: IoU above which the lower-scoring of two same-class detections is dropped.
        topk_candidates: Detections kept per pyramid level before NMS.
        detections_per_img: Detections kept per image after NMS.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    center_sampling_radius: float = Field(default=1.5, gt=0.0)
    focal_alpha: float = Field(default=0.25, ge=0.0, le=1.0)
    focal_gamma: float = Field(default=2.0, ge=0.0)
    centerness_weight: float = Field(default=0.2, ge=0.0)
    score_thresh: float = Field(default=0.05, ge=0.0, lt=1.0)
    nms_thresh: float = Field(default=0.6, gt=0.0, le=1.0)
    topk_candidates: int = Field(default=1000, ge=1)
    detections_per_img: int = Field(default=100, ge=1)


@dataclass(frozen=True)
class DetectionFeatures:
    """The shared detection decoder's output: tower features per pyramid level, finest first.

    Attributes:
        cls_feats: ``(B, D, H_l, W_l)`` per level, from the classification tower.
        box_feats: ``(B, D, H_l, W_l)`` per level, from the box tower.
        strides: Stride of each level in input pixels (8, 16, 32, 64, 128).
    """

    cls_feats: list[torch.Tensor]
    box_feats: list[torch.Tensor]
    strides: tuple[int, ...]


@dataclass(frozen=True)
class FCOSOutput:
    """An FCOS head's predictions per pyramid level, finest first.

    Attributes:
        cls_logits: ``(B, C, H_l, W_l)`` per-class logits.
        box_regression: ``(B, 4, H_l, W_l)`` distances ``(left, top, right, bottom)`` from each
            point to its box's sides, divided by the level's stride; non-negative.
        centerness: ``(B, 1, H_l, W_l)`` centerness logits.
        strides: Stride of each level in input pixels.
    """

    cls_logits: list[torch.Tensor]
    box_regression: list[torch.Tensor]
    centerness: list[torch.Tensor]
    strides: tuple[int, ...]


@dataclass(frozen=True)
class FCOSLossTerms:
    """FCOS's three loss terms, each divided by ``max(1, number of positive points)``.

    Attributes:
        classification: Sigmoid focal loss summed over all points and classes.
        box_regression: GIoU loss summed over positives.
        centerness: Centerness BCE-with-logits summed over positives.
    """

    classification: torch.Tensor
    box_regression: torch.Tensor
    centerness: torch.Tensor


class FCOSHead(nn.Module):
    """A task's FCOS predictions: three 3x3 convs shared across levels, on the towers' features.

    Side distances are ``relu(scale_l * conv(box_feat))`` with a learnable scale per level, in
    units of the level's stride, as in FCOS with normalised regression targets [0].

    Args:
        in_channels: Channels of the decoder's tower features.
        num_classes: ``C``, number of object classes (no background class).
        num_levels: Most pyramid levels the head will see (one scale each).
    """

    def __init__(self, in_channels: int, num_classes: int, num_levels: int = MAX_LEVELS) -> None:
        super().__init__()
        self.cls_logits = nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)
        self.box_regression = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)
        self.scales = nn.Parameter(torch.ones(num_levels))
        for conv in (self.cls_logits, self.box_regression, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.get_parameter("bias"))  # typed, unlike the Optional ``conv.bias``
        # every class starts at the prior, so the many easy negatives do not swamp the first steps
        nn.init.constant_(
            self.cls_logits.get_parameter("bias"), -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        )

    def forward(self, features: DetectionFeatures) -> FCOSOutput:
        if len(features.box_feats) > self.scales.numel():
            raise ValueError(
                f"FCOSHead has scales for {self.scales.numel()} levels, got {len(features.box_feats)} "
                f"(strides {features.strides}); build it with num_levels={len(features.box_feats)}"
            )
        return FCOSOutput(
            cls_logits=[self.cls_logits(f) for f in features.cls_feats],
            box_regression=[
                F.relu(self.scales[level] * self.box_regression(f))
                for level, f in enumerate(features.box_feats)
            ],
            centerness=[self.centerness(f) for f in features.box_feats],
            strides=features.strides,
        )


class DetectionTask:
    """Axis-aligned boxes of ``C >= 1`` object classes per image.

    Input to the head: ``DetectionFeatures`` from the shared detection decoder. Output:
    ``FCOSOutput``. Targets: one dict per image, ``boxes`` ``(N, 4)`` float32 xyxy in pixels of
    the network input, ``labels`` ``(N,)`` int64 in ``[0, C)``; ``N`` may be 0.

    Examples:
        >>> spec = TaskSpec(name="cells", type="detection", classes=["cell"], source={"path": "c.csv"})
        >>> task = DetectionTask(spec)
        >>> head = task.build_head(8)
        >>> feats = [torch.zeros(1, 8, n, n) for n in (8, 4, 2, 1, 1)]  # a 64 px image
        >>> outputs = head(DetectionFeatures(feats, feats, (8, 16, 32, 64, 128)))
        >>> targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([0])}]
        >>> round(task.loss(outputs, targets).item(), 2)  # chance level
        1.0
    """

    feature: ClassVar[FeatureKind] = "pyramid"
    target: ClassVar[TargetKind] = "boxes"
    primary_metric: ClassVar[str | None] = "map_50"
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]] = ("frozen-decoder", "finetune")
    probe_targets: ClassVar[ProbeTargets | None] = None
    postprocess_text: ClassVar[str] = (
        "FCOS: per level l and point (x, y) at stride s: score = sqrt(sigmoid(cls_logits) * "
        "sigmoid(centerness)); box = ((x + 0.5) s - left s, (y + 0.5) s - top s, (x + 0.5) s + "
        "right s, (y + 0.5) s + bottom s) with (left, top, right, bottom) = box_regression; then "
        "per-class NMS"
    )
    ignore_index: ClassVar[None] = None

    def __init__(self, spec: TaskSpec) -> None:
        if spec.num_classes < 1:
            raise ConfigError(f"task '{spec.name}': classes: detection needs at least 1 class, got none")
        self.spec = spec
        self.options = parse_options(spec, DetectionOptions)
        o = self.options
        focal_at_prior = (
            o.focal_alpha * (1 - PRIOR_PROBABILITY) ** o.focal_gamma * -math.log(PRIOR_PROBABILITY)
        )
        self._loss_at_chance = focal_at_prior + 1.0 + o.centerness_weight * math.log(2.0)

    def build_head(self, in_channels: int) -> FCOSHead:
        return FCOSHead(in_channels, self.spec.num_classes)

    def loss(self, outputs: FCOSOutput, targets: Sequence[BoxTarget]) -> torch.Tensor:
        o = self.options
        terms = fcos_loss_terms(
            outputs,
            targets,
            center_sampling_radius=o.center_sampling_radius,
            focal_alpha=o.focal_alpha,
            focal_gamma=o.focal_gamma,
        )
        total = terms.classification + terms.box_regression + terms.centerness * o.centerness_weight
        return total.div(self._loss_at_chance)

    @torch.no_grad()
    def postprocess(self, outputs: FCOSOutput, image_size: tuple[int, int] | None = None) -> list[BoxTarget]:
        """Detections per image: top-k per level, decode, clip, per-class NMS.

        A detection's score is ``sqrt(sigmoid(class logit) * sigmoid(centerness))`` [0, 1].

        Args:
            outputs: The head's predictions for a batch.
            image_size: ``(H, W)`` of the network input, for clipping; ``None`` takes the finest
                level's size times its stride (equal to the input size when it is a multiple
                of that stride, slightly larger otherwise).

        Returns:
            One dict per image: ``boxes`` ``(K, 4)`` float32 xyxy, ``scores`` ``(K,)`` float32,
            ``labels`` ``(K,)`` int64, by decreasing score, ``K <= detections_per_img``.
        """
        o = self.options
        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in outputs.cls_logits]
        if image_size is None:
            image_size = (sizes[0][0] * outputs.strides[0], sizes[0][1] * outputs.strides[0])
        grid = point_grid(sizes, outputs.strides, outputs.cls_logits[0].device)
        cls_logits, box_regression, centerness = _flatten_levels(outputs)
        num_classes = cls_logits.shape[2]
        level_starts = [sum(grid.num_per_level[:level]) for level in range(len(sizes))]
        detections = []
        for image in range(cls_logits.shape[0]):
            scores = torch.sqrt(cls_logits[image].sigmoid() * centerness[image].sigmoid()[:, None])  # (P, C)
            candidates = []
            for start, count in zip(level_starts, grid.num_per_level, strict=True):
                level_scores = scores[start : start + count].flatten()
                above = torch.nonzero(level_scores > o.score_thresh).squeeze(1)
                top = level_scores[above].topk(min(o.topk_candidates, above.numel())).indices
                candidates.append(above[top] + start * num_classes)
            flat = torch.cat(candidates)
            points, labels = flat // num_classes, flat % num_classes
            boxes = decode_boxes(box_regression[image, points], grid.points[points], grid.strides[points])
            boxes = clip_boxes_to_image(boxes, image_size)
            image_scores = scores.flatten()[flat]
            keep = batched_nms(boxes, image_scores, labels, o.nms_thresh)[: o.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": image_scores[keep], "labels": labels[keep]})
        return detections

    def predict(self, outputs: FCOSOutput, *, image_size: tuple[int, int]) -> BoxPredictions:
        """The detections of ``postprocess``, clipped to the network input ``image_size``."""
        return BoxPredictions(self.postprocess(outputs, image_size))

    def metrics(self) -> DetectionMetrics:
        return DetectionMetrics(self.postprocess, self.spec.num_classes)

    def collate_targets(self, targets: Sequence[BoxTarget]) -> list[BoxTarget]:
        name, classes = self.spec.name, self.spec.classes
        batch = []
        for target in targets:
            boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
            labels = torch.as_tensor(target["labels"], dtype=torch.long).reshape(-1)
            if boxes.shape[0] != labels.shape[0]:
                raise DataError(
                    f"task '{name}': a sample has {boxes.shape[0]} boxes but {labels.shape[0]} labels"
                )
            if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
                raise DataError(
                    f"task '{name}': box labels must be class indices in [0, {len(classes) - 1}] "
                    f"({', '.join(classes)}), got {labels.tolist()}"
                )
            batch.append({"boxes": boxes, "labels": labels})
        return batch


def fcos_loss_terms(
    outputs: FCOSOutput,
    targets: Sequence[BoxTarget],
    *,
    center_sampling_radius: float = 1.5,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
) -> FCOSLossTerms:
    """FCOS's classification, box and centerness losses for a batch, as torchvision computes them.

    Args:
        outputs: The head's predictions.
        targets: One dict per image (see ``DetectionTask``).
        center_sampling_radius: See ``DetectionOptions``.
        focal_alpha: See ``DetectionOptions``.
        focal_gamma: See ``DetectionOptions``.

    Returns:
        The three terms, each a scalar float32 tensor.
    """
    cls_logits, box_regression, centerness = _flatten_levels(outputs)
    device = cls_logits.device
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in outputs.cls_logits]
    grid = point_grid(sizes, outputs.strides, device)
    boxes = [t["boxes"].to(device=device, dtype=torch.float32) for t in targets]
    matched = torch.stack([match_points(grid, b, center_sampling_radius) for b in boxes])  # (B, P)
    # index into all images' boxes at once, so positives are gathered without a loop
    offsets = torch.tensor([0] + [b.shape[0] for b in boxes[:-1]], device=device).cumsum(0)
    image_idx, point_idx = torch.nonzero(matched >= 0, as_tuple=True)
    box_idx = matched[image_idx, point_idx] + offsets[image_idx]
    gt_boxes = torch.cat(boxes)[box_idx]
    gt_labels = torch.cat([t["labels"].to(device=device, dtype=torch.long) for t in targets])[box_idx]
    num_positives = max(1, int(image_idx.numel()))

    cls_targets = torch.zeros_like(cls_logits)
    cls_targets[image_idx, point_idx, gt_labels] = 1.0
    focal = sigmoid_focal_loss(cls_logits, cls_targets, alpha=focal_alpha, gamma=focal_gamma, reduction="sum")

    points, strides = grid.points[point_idx], grid.strides[point_idx]
    pred_boxes = decode_boxes(box_regression[image_idx, point_idx], points, strides)
    giou = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="sum")

    ctr_targets = centerness_targets(box_distances(points, gt_boxes))
    ctr = F.binary_cross_entropy_with_logits(centerness[image_idx, point_idx], ctr_targets, reduction="sum")
    return FCOSLossTerms(focal / num_positives, giou / num_positives, ctr / num_positives)


def _flatten_levels(outputs: FCOSOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, P, C)`` logits, ``(B, P, 4)`` distances and ``(B, P)`` centerness, float32."""

    def flat(levels: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x.flatten(2) for x in levels], dim=2).transpose(1, 2).float()

    return flat(outputs.cls_logits), flat(outputs.box_regression), flat(outputs.centerness).squeeze(2)

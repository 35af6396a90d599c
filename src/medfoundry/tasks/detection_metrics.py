"""Detection metrics: COCO mAP of a split, and the same from per-image match flags under item
weights (bootstrap resamples).

COCO's evaluation [0] matches each image's detections to its ground-truth boxes greedily, one
class and one IoU threshold at a time, and only then pools the images: every detection becomes
a (score, hit or miss) pair, and each image adds its number of ground-truth boxes. So a test set
can be kept per image (``match_image``) and scored under any weighting of its images
(``weighted_coco_map``) by weighted cumulative sums, which is what a bootstrap over test images
needs: pycocotools (which torchmetrics calls) re-runs the whole evaluation per resample, seconds
each. With unit weights the result equals pycocotools' ``AP@0.5`` and ``AP@[0.5:0.95]`` (tested
against torchmetrics on real detections).

[0] Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014; the matching and
    interpolation follow ``pycocotools/cocoeval.py`` (``evaluateImg`` and ``accumulate``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["IOU_THRESHOLDS", "MAX_DETECTIONS", "DetectionMetrics", "match_image", "weighted_coco_map"]

# torchmetrics hands pycocotools thresholds made by torch.linspace in float32 (0.65 is 0.6499999762),
# which decides exact ties of IoU and recall; the same values here give the same mAP
IOU_THRESHOLDS = np.array(torch.linspace(0.5, 0.95, 10).tolist())
RECALL_THRESHOLDS = np.array(torch.linspace(0.0, 1.0, 101).tolist())
MAX_DETECTIONS = 100
"""Detections per image and class that COCO's ``maxDets=100`` keeps."""
AREA_ALL = 1e5**2
"""Upper end of COCO's area range "all" (square pixels)."""


class DetectionMetrics:
    """COCO mAP over all batches added, from post-processed detections.

    ``compute()`` asks pycocotools (through torchmetrics), the reference. ``items()`` keeps each
    image's detections as (score, class, hit at each IoU threshold) and its ground-truth counts,
    from which ``score_items`` gives the same mAP under any weighting of the images.

    Args:
        postprocess: Turns a batch's head outputs into detections (``DetectionTask.postprocess``):
            per image ``boxes`` ``(K, 4)`` xyxy, ``scores`` ``(K,)``, ``labels`` ``(K,)``.
        num_classes: Object classes; default: one more than the largest label seen.
    """

    def __init__(
        self, postprocess: Callable[[Any], list[dict[str, torch.Tensor]]], num_classes: int | None = None
    ) -> None:
        from torchmetrics.detection import MeanAveragePrecision  # its import takes ~1 s

        self._postprocess = postprocess
        self._map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        self.num_classes = num_classes
        self._matches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._truth: list[np.ndarray] = []

    def update(self, outputs: Any, targets: Sequence[dict[str, torch.Tensor]]) -> None:
        detections = [{k: v.detach().cpu() for k, v in d.items()} for d in self._postprocess(outputs)]
        truth = [
            {"boxes": t["boxes"].detach().cpu().float(), "labels": t["labels"].detach().cpu()}
            for t in targets
        ]
        self._map.update(detections, truth)
        for found, true in zip(detections, truth, strict=True):
            self._matches.append(
                match_image(
                    found["boxes"].numpy(),
                    found["scores"].numpy(),
                    found["labels"].numpy(),
                    truth_boxes=true["boxes"].numpy(),
                    truth_labels=true["labels"].numpy(),
                )
            )
            self._truth.append(true["labels"].numpy())

    def compute(self) -> dict[str, float]:
        if not self._truth:
            return {"map_50": math.nan, "map": math.nan}
        result = self._map.compute()
        # torchmetrics reports -1 where COCO's evaluation is undefined (no ground-truth boxes)
        return {key: float(result[key]) if float(result[key]) >= 0 else math.nan for key in ("map_50", "map")}

    def items(self) -> dict[str, np.ndarray]:
        """Per detection: ``image`` index, ``scores``, ``labels``, ``hits`` ``(D, 10)`` (outcomes of
        ``match_image``); per image:
        ``truth_counts`` ``(N, C)`` ground-truth boxes per class."""
        seen = [m[1] for m in self._matches] + self._truth
        num_classes = self.num_classes or max((int(x.max()) + 1 for x in seen if x.size), default=1)
        matches = self._matches or [(np.zeros(0, np.float32), np.zeros(0, np.int64), _no_hits())]
        return {
            "image": np.concatenate([np.full(m[0].size, i, np.int64) for i, m in enumerate(matches)]),
            "scores": np.concatenate([m[0] for m in matches]).astype(np.float32),
            "labels": np.concatenate([m[1] for m in matches]).astype(np.int64),
            "hits": np.concatenate([m[2] for m in matches]),
            "truth_counts": np.stack([np.bincount(t, minlength=num_classes) for t in self._truth]).astype(
                np.int64
            )
            if self._truth
            else np.zeros((0, num_classes), np.int64),
        }

    def score_items(self, items: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
        """``map_50`` and ``map`` under each row of ``weights`` ``(B, N)``: name -> ``(B,)``."""
        return weighted_coco_map(
            items["image"],
            items["scores"],
            items["labels"],
            hits=items["hits"],
            truth_counts=items["truth_counts"],
            weights=weights,
        )

    def chance(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        """Boxes placed without looking at the image find (next to) nothing: 0."""
        return {"map_50": 0.0, "map": 0.0} if items["truth_counts"].sum() > 0 else {}


def match_image(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    truth_boxes: np.ndarray,
    truth_labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match one image's detections to its ground truth, per class and IoU threshold.

    Args:
        boxes: ``(D, 4)`` xyxy detections; ``scores`` ``(D,)``; ``labels`` ``(D,)`` class indices.
        truth_boxes: ``(G, 4)`` xyxy; ``truth_labels`` ``(G,)``.

    Returns:
        The kept detections' ``scores`` and ``labels`` (per class the best ``MAX_DETECTIONS``,
        by decreasing score) and ``outcomes`` ``(K, 10)`` int8 at each of COCO's IoU thresholds
        0.50, 0.55, ..., 0.95: 1 matched, 0 not matched, -1 ignored (unmatched with a negative
        area, which COCO's area range "all" leaves out).
    """
    kept_scores, kept_labels, kept_hits = [], [], []
    for label in np.unique(labels):
        mine = np.flatnonzero(labels == label)
        mine = mine[np.argsort(-scores[mine], kind="mergesort")][:MAX_DETECTIONS]
        truth = truth_boxes[truth_labels == label]
        ious = _coco_iou(boxes[mine], truth)  # (d, g)
        hits = np.zeros((mine.size, IOU_THRESHOLDS.size), dtype=np.int8)
        xywh = _xywh(boxes[mine])
        outside = ~((xywh[:, 2] * xywh[:, 3] >= 0) & (xywh[:, 2] * xywh[:, 3] <= AREA_ALL))
        for t, threshold in enumerate(IOU_THRESHOLDS):
            taken = np.zeros(truth.shape[0], dtype=bool)
            for d in range(mine.size):
                # cocoeval: the free box of highest IoU >= the threshold; on equal IoU the later box
                free = ~taken & (ious[d] >= min(threshold, 1 - 1e-10))
                if free.any():
                    values = np.where(free, ious[d], -np.inf)
                    best = values.size - 1 - int(np.argmax(values[::-1]))
                    taken[best], hits[d, t] = True, 1
                elif outside[d]:
                    hits[d, t] = -1
        kept_scores.append(scores[mine])
        kept_labels.append(labels[mine])
        kept_hits.append(hits)
    if not kept_scores:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), _no_hits()
    return np.concatenate(kept_scores), np.concatenate(kept_labels), np.concatenate(kept_hits)


def weighted_coco_map(
    image: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    hits: np.ndarray,
    truth_counts: np.ndarray,
    weights: np.ndarray,
) -> dict[str, np.ndarray]:
    """COCO ``map_50`` and ``map`` (IoU 0.50:0.95) under each row of ``weights``.

    Args:
        image: ``(D,)`` image index of each detection, images in test-set order (and each
            image's detections by decreasing score, as ``match_image`` returns them).
        scores, labels, hits: As returned by ``match_image`` (``hits``: its outcomes),
            concatenated over images.
        truth_counts: ``(N, C)`` ground-truth boxes per image and class.
        weights: ``(B, N)`` image weights.

    Returns:
        ``{"map_50": (B,), "map": (B,)}``; a class counts in a row when the row weights one of
        its ground-truth boxes (COCO leaves out classes without ground truth); NaN when none does.
    """
    rows, num_classes = weights.shape[0], truth_counts.shape[1]
    ap = np.full((rows, num_classes, IOU_THRESHOLDS.size), math.nan)
    for c in range(num_classes):
        positives = weights @ truth_counts[:, c].astype(np.float64)  # (B,)
        mine = np.flatnonzero(labels == c)
        # a stable sort over images in test-set order: pycocotools' concatenate-then-mergesort
        mine = mine[np.argsort(-scores[mine], kind="mergesort")]
        w = weights[:, image[mine]]  # (B, d)
        for t in range(IOU_THRESHOLDS.size):
            outcome = hits[mine, t]
            tp, fp = np.cumsum(w * (outcome == 1), axis=1), np.cumsum(w * (outcome == 0), axis=1)
            for b in np.flatnonzero(positives > 0):
                ap[b, c, t] = _interpolated_ap(tp[b], fp[b], positives[b])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without ground truth: NaN
        return {"map_50": np.nanmean(ap[:, :, 0], axis=1), "map": np.nanmean(ap.mean(axis=2), axis=1)}


def _no_hits() -> np.ndarray:
    return np.zeros((0, IOU_THRESHOLDS.size), dtype=np.int8)


def _interpolated_ap(tp: np.ndarray, fp: np.ndarray, positives: float) -> float:
    """COCO's 101-point interpolated precision, averaged."""
    if tp.size == 0:
        return 0.0
    recall = tp / positives
    precision = tp / (tp + fp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    positions = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    reached = positions < tp.size
    return float(np.where(reached, envelope[np.minimum(positions, tp.size - 1)], 0.0).mean())


def _coco_iou(boxes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU as pycocotools computes it for boxes handed over in float32 xywh (as torchmetrics does)."""
    if boxes.shape[0] == 0 or truth.shape[0] == 0:
        return np.zeros((boxes.shape[0], truth.shape[0]))
    d, g = _xywh(boxes), _xywh(truth)
    dx, dy, dw, dh = (d[:, i, None] for i in range(4))
    gx, gy, gw, gh = (g[None, :, i] for i in range(4))
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = dw * dh + gw * gh - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = boxes.astype(np.float32)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1).astype(np.float64)

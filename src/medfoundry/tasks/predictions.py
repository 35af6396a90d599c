"""What a task's head predicts for a batch, in the forms ``medfoundry predict`` writes.

A task type turns its head's outputs into one of these (``TaskType.predict``); the predict
recipe writes each form its own way (a CSV of probabilities, masks, COCO detections). A new
task type that predicts classes, per-pixel classes or boxes needs nothing else: only a new form
of prediction needs a writer in ``recipes/predict/outputs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BoxPredictions", "ClassPredictions", "PixelPredictions", "Predictions"]


@dataclass(frozen=True)
class ClassPredictions:
    """Image-level classes: every class's probability and the classes predicted.

    Attributes:
        probabilities: ``(B, C)`` float32 in [0, 1] (softmax, or one sigmoid per class).
        predicted: Per image, the indices of the predicted classes (one for a multi-class task,
            any number for a multilabel one), ascending.

    Examples:
        >>> p = ClassPredictions(torch.tensor([[0.2, 0.8]]), [[1]])
        >>> p.predicted[0]
        [1]
    """

    probabilities: torch.Tensor
    predicted: list[list[int]]


@dataclass(frozen=True)
class PixelPredictions:
    """Per-pixel classes.

    Attributes:
        class_scores: ``(B, C, S, S)`` float32 per-pixel class scores on the network input's
            canvas (logits: resized bilinearly onto an image's own grid, the argmax over ``C`` is
            the predicted class).
    """

    class_scores: torch.Tensor


@dataclass(frozen=True)
class BoxPredictions:
    """Scored boxes.

    Attributes:
        detections: One dict per image: ``boxes`` ``(K, 4)`` float32 xyxy in pixels of the
            network input, ``scores`` ``(K,)`` float32 in [0, 1], ``labels`` ``(K,)`` int64 class
            indices.
    """

    detections: list[dict[str, torch.Tensor]]


Predictions = ClassPredictions | PixelPredictions | BoxPredictions
"""Any form of prediction."""

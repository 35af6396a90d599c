"""Task types: head, normalised loss, metrics and collate for each label type.

``TASK_TYPES`` maps a spec's ``type`` to its class; ``build_task(spec)`` makes the task;
``with_classes(spec)`` fills in classes the spec leaves to its data.
"""

from __future__ import annotations

from medfoundry.data.task_records import resolve_classes
from medfoundry.registry import Registry
from medfoundry.tasks.classification import ClassificationTask
from medfoundry.tasks.database import load_task_database
from medfoundry.tasks.detection import DetectionTask
from medfoundry.tasks.masked_image import MaskedImageTask
from medfoundry.tasks.multilabel import MultilabelTask
from medfoundry.tasks.predictions import BoxPredictions, ClassPredictions, PixelPredictions, Predictions
from medfoundry.tasks.segmentation import SegmentationTask
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import (
    EVALUATION_MODES,
    EvaluationMode,
    FeatureKind,
    ProbeTargets,
    TaskMetrics,
    TaskType,
    TaskTypeClass,
)
from medfoundry.tasks.two_view import TwoViewTask

__all__ = [
    "EVALUATION_MODES",
    "TASK_TYPES",
    "BoxPredictions",
    "ClassPredictions",
    "ClassificationTask",
    "DetectionTask",
    "EvaluationMode",
    "FeatureKind",
    "MaskedImageTask",
    "MultilabelTask",
    "PixelPredictions",
    "Predictions",
    "ProbeTargets",
    "SegmentationTask",
    "TaskMetrics",
    "TaskSpec",
    "TaskType",
    "TaskTypeClass",
    "TwoViewTask",
    "build_task",
    "load_task_database",
    "with_classes",
]

TASK_TYPES: Registry[TaskTypeClass] = Registry("task type")
TASK_TYPES.register("classification")(ClassificationTask)
TASK_TYPES.register("detection")(DetectionTask)
TASK_TYPES.register("masked_image")(MaskedImageTask)
TASK_TYPES.register("multilabel")(MultilabelTask)
TASK_TYPES.register("segmentation")(SegmentationTask)
TASK_TYPES.register("two_view")(TwoViewTask)


def build_task(spec: TaskSpec) -> TaskType:
    """Make the task for a spec (validates the spec's type and options)."""
    return TASK_TYPES.get(spec.type)(spec)


def with_classes(spec: TaskSpec) -> TaskSpec:
    """The spec with its classes: the declared ones, or those its data names (class folders,
    label values, COCO categories, MedMNIST indices). Every command that reads a task database
    resolves classes through this one function, so they all agree.

    Raises:
        ConfigError: an unknown task type, or a source that cannot name its classes.
        DataError: the source cannot be read.
    """
    target = TASK_TYPES.get(spec.type).target
    return spec.model_copy(update={"classes": resolve_classes(spec.data_source(), target, spec.classes)})

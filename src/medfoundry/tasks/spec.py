"""The task specification: one entry of a task database.

A task is one labelled dataset with one label type. The spec says what the task is (name,
type, classes, modality), where its data comes from (``source``, one of the formats in
``medfoundry.data.sources``, picked by its ``type``), how its images are preprocessed and its
records split, and task-type options, which the task type validates with its own ``Options``
model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfoundry.data.augment import AugmentConfig
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.sources import SourceBase, SourceConfig
from medfoundry.data.splits import SplitPolicy
from medfoundry.errors import ConfigError

__all__ = ["DatabaseTask", "TaskSpec", "check_unique_names"]


class TaskSpec(BaseModel):
    """One task of a multi-task database.

    Args:
        name: Unique identifier (letters, digits, ``_`` and ``-``); names the head and log keys.
        type: A registered task type: ``classification``, ``multilabel``, ``segmentation``,
            ``detection``, ``masked_image`` (``medfoundry ls`` lists them).
        classes: Class names, in label order. For segmentation, index 0 is usually background
            and mask pixel value ``i`` means ``classes[i]``; for multilabel these are also the
            manifest's label columns. Empty: read from the data where the source can name
            them (class subfolders, label values, COCO categories, MedMNIST label indices).
            Unlabelled (``masked_image``) tasks have none.
        source: Where the samples come from (``type: manifest`` when no type is given).
            Required in a task database; a task built only for its head, loss and metrics
            (``medfoundry.create_task``) has none.
        modality: Free text (``CT``, ``fluorescence``, ...), recorded in checkpoints and reports.
        preprocessing: Cached size, fit, channels, intensity (CT windows, percentiles, ...).
        split: How records without a given split are divided into train / val / test.
        batch_size: Images per batch for this task; ``None`` uses the run's default.
        augment: Changes to the run's (pretraining) or the study's (``finetune``,
            ``frozen-decoder``) training augmentation for this task: the keys given replace
            theirs, the others are kept. Set it where a transform changes the label:
            ``{enable_flips: false}`` for left/right or anterior/posterior classes.
        options: Task-type options, validated by the task type (e.g. ``ignore_index``).

    Examples:
        >>> spec = TaskSpec(name="nuclei", type="segmentation", classes=["background", "nucleus"],
        ...                 source={"path": "nuclei.csv"})
        >>> spec.num_classes
        2
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    type: str
    classes: list[str] = Field(default_factory=list)
    source: SourceConfig | None = None
    modality: str | None = None
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    split: SplitPolicy = Field(default_factory=SplitPolicy)
    batch_size: int | None = Field(default=None, ge=1)
    augment: AugmentConfig | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("classes", mode="before")
    @classmethod
    def _text_classes(cls, classes: Any) -> Any:
        if isinstance(classes, list) and (found := [c for c in classes if not isinstance(c, str)]):
            raise ValueError(
                f"class names must be text, got {', '.join(repr(c) for c in found)}: put them in quotes "
                "(YAML reads 0 as a number and no / yes as false / true), e.g. ['0', '1'] or ['no', 'yes']"
            )
        return classes

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[str]) -> list[str]:
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        if dupes:
            raise ValueError(f"class names must be unique; repeated: {', '.join(dupes)}")
        return classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def training_augment(self, default: AugmentConfig) -> AugmentConfig:
        """The augmentation of this task's training samples: ``default`` with the keys this
        task's ``augment`` sets replaced.

        Examples:
            >>> run = AugmentConfig(affine_degrees=10)
            >>> zone = TaskSpec(name="zone", type="classification", augment={"enable_flips": False})
            >>> zone.training_augment(run).enable_flips, zone.training_augment(run).affine_degrees
            (False, 10.0)
            >>> TaskSpec(name="count", type="classification").training_augment(run) == run
            True
        """
        if self.augment is None:
            return default
        return default.model_copy(
            update={key: getattr(self.augment, key) for key in self.augment.model_fields_set}
        )

    def data_source(self) -> SourceBase:
        """The source, for the commands that read the task's data.

        Raises:
            ConfigError: the spec has no source.
        """
        if self.source is None:
            raise ConfigError(f"task '{self.name}': source: required to read its data (none given)")
        return self.source


class DatabaseTask(TaskSpec):
    """A task of a task database: a ``TaskSpec`` whose ``source`` is required (a missing one is
    ``tasks.N.source: required key is missing``, like any required key)."""

    source: SourceConfig


def check_unique_names(tasks: Sequence[TaskSpec]) -> Sequence[TaskSpec]:
    """Task names must be unique (they name heads, log keys and cache folders).

    Raises:
        ValueError: naming the repeated names (pydantic reports it under ``tasks``).
    """
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"task names must be unique; repeated: {', '.join(dupes)}")
    return tasks

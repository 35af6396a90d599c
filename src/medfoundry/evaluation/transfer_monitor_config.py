"""The transfer monitor's settings (``training.transfer_monitor`` of a pretraining config):
which held-out tasks to score during pretraining, how often and how. The monitor itself is
``evaluation.transfer_monitor``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from medfoundry.evaluation.probes import ProbeConfig, ProbeMode
from medfoundry.registry import unknown_name_message
from medfoundry.tasks.spec import DatabaseTask, check_unique_names

__all__ = ["KEY", "PROBE_MODES", "TransferMonitorConfig"]

PROBE_MODES: tuple[ProbeMode, ...] = ("linear", "knn")

KEY = "training.transfer_monitor"
"""Where the monitor's settings live in a pretraining config (error messages name it)."""


class TransferMonitorConfig(BaseModel):
    """Which held-out tasks to score during pretraining, how often and how.

    Args:
        tasks: The held-out task database: a list of task specs (in a YAML file also the path of
            a task database, e.g. the corpus's ``heldout_tasks.yaml``, relative to that file).
        task_names: The tasks to score; each must exist in ``tasks`` and take probes
            (classification, multilabel).
        every_steps: Score every this many shared steps (and at step 0 and the last step).
        max_images: At most this many images of each task's training split, and as many of its
            validation split: a stratified subset drawn once (the study's nested fractions).
        probes: ``linear`` (logistic regression) and / or ``knn``.
        probe: Probe settings, as a study's ``probe`` section (``feature_levels``: the pooled
            pyramid levels; ``batch_size``: images per forward pass; ``num_workers`` is not
            used: the images are in memory).
        split_seed: The study's ``split_seed``: seeds the split of rows without one, and the subsets.
        val_fraction: The study's ``val_fraction``.
        test_fraction: The study's ``test_fraction`` (the test rows are set aside, never read).
        folds: 1 scores the probes fitted on the training subset on the validation subset; ``k``
            >= 2 cross-validates over both subsets pooled, whole groups in ``k`` folds (the
            module docstring); each task needs at least ``k`` groups there.
        fold_seed: Seeds the deal of groups into folds (another seed: another deal, the same splits).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[DatabaseTask] = Field(min_length=1)
    task_names: list[str] = Field(min_length=1)
    every_steps: int = Field(default=100, ge=1)
    max_images: int = Field(default=1000, ge=1)
    probes: list[ProbeMode] = Field(default_factory=lambda: list(PROBE_MODES), min_length=1)
    probe: ProbeConfig = ProbeConfig()
    split_seed: int = 0
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    folds: int = Field(default=1, ge=1)
    fold_seed: int = 0

    @field_validator("probe")
    @classmethod
    def _fixed_levels(cls, probe: ProbeConfig) -> ProbeConfig:
        if probe.feature_level_choices:
            raise ValueError(
                "feature_level_choices is for studies: the monitor scores on the validation split "
                "it would choose on; give feature_levels"
            )
        return probe

    @field_validator("tasks")
    @classmethod
    def _unique_task_names(cls, tasks: list[DatabaseTask]) -> list[DatabaseTask]:
        check_unique_names(tasks)
        return tasks

    @field_validator("task_names")
    @classmethod
    def _known_task_names(cls, names: list[str], info: ValidationInfo) -> list[str]:
        tasks = info.data.get("tasks")
        known = [t.name for t in tasks] if tasks is not None else None  # bad tasks: reported there
        unknown = [n for n in names if known is not None and n not in known]
        if unknown:
            raise ValueError("; ".join(unknown_name_message("task", n, known or []) for n in unknown))
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"names must be unique; repeated: {', '.join(repeated)}")
        return names

    @field_validator("probes")
    @classmethod
    def _unique_probes(cls, probes: list[ProbeMode]) -> list[ProbeMode]:
        return list(dict.fromkeys(probes))

    @property
    def selected_tasks(self) -> list[DatabaseTask]:
        """The monitored task specs, in ``task_names`` order."""
        by_name = {t.name: t for t in self.tasks}
        return [by_name[n] for n in self.task_names]

"""The one config of the evaluation-study recipe (``medfoundry evaluate STUDY.yaml``).

Paths written in the YAML file (``study_dir``, the task database, checkpoint folders) are
relative to that file; paths given with ``--set`` are relative to the current folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medfoundry.config_io import path_keys, validate_config
from medfoundry.errors import ConfigError
from medfoundry.evaluation.bootstrap import BootstrapUnit
from medfoundry.evaluation.finetune import FinetuneConfig
from medfoundry.evaluation.linear_decoder import LinearDecoderConfig
from medfoundry.evaluation.pretrained_encoder import looks_like_path
from medfoundry.evaluation.probes import ProbeConfig
from medfoundry.models.config import TimmArguments
from medfoundry.recipes.pretrain.config import read_config
from medfoundry.registry import unknown_name_message
from medfoundry.tasks.database import is_source_path
from medfoundry.tasks.spec import DatabaseTask, TaskSpec
from medfoundry.tasks.task_type import EVALUATION_MODES, EvaluationMode, TaskType

__all__ = [
    "BASELINES",
    "DEFAULT_FRACTIONS",
    "MODES",
    "PIXELS",
    "PROBE_MODES",
    "BootstrapConfig",
    "FewShotConfig",
    "Mode",
    "ReferenceConfig",
    "StudyConfig",
    "StudyEncoder",
    "check_names",
    "load_study_config",
]

Mode = EvaluationMode
MODES: tuple[Mode, ...] = EVALUATION_MODES
PROBE_MODES: tuple[Mode, ...] = ("linear", "knn")
"""Modes that fit a probe on frozen features (the only ones a ``pixels`` encoder runs)."""
PIXELS = "pixels"
"""The ``source`` of the raw-pixel baseline encoder."""
Baseline = Literal["random", "pixels", "imagenet"]
BASELINES: tuple[Baseline, ...] = ("random", "pixels", "imagenet")
DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudyEncoder(_Frozen):
    """One encoder under evaluation: ``load_encoder`` arguments and its name in the results.

    Args:
        name: Label in results and plots (letters, digits, ``_``, ``-``).
        source: A medfoundry checkpoint folder, a timm model name, or ``pixels``: the
            standardised raw pixels (a baseline that runs the probe modes only).
        pretrained: Load the source's weights (checkpoint, or ImageNet for timm names);
            ``false`` gives the same architecture with random weights (from scratch).
        model_kwargs: Extra ``timm.create_model`` arguments (timm names only; the architecture
            arguments of ``medfoundry.models.config.TIMM_ARGUMENTS``).
        pixels_size: Side the ``pixels`` encoder downsamples each channel to (default 16).
    """

    name: str = Field(pattern=NAME_PATTERN)
    source: str
    pretrained: bool = True
    model_kwargs: TimmArguments = None
    pixels_size: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _pixels_options(self) -> StudyEncoder:
        if self.source == PIXELS:
            if not self.pretrained or self.model_kwargs:
                raise ValueError(
                    "the pixels encoder has no weights: pretrained and model_kwargs do not apply"
                )
        elif self.pixels_size is not None:
            raise ValueError("pixels_size applies only to source: pixels")
        return self

    @property
    def is_pixels(self) -> bool:
        """Whether this is the raw-pixel baseline."""
        return self.source == PIXELS


class ReferenceConfig(_Frozen):
    """The full-data score each encoder's data-efficiency is measured against.

    Args:
        encoder: Reference encoder; default: the first with ``pretrained: false`` (random init).
        mode: Reference mode; default: the mode of the row being measured.
        fraction: Reference fraction.
        margin: Non-inferiority margin in metric units: a fraction "reaches" the reference when
            the lower end of the 95% paired bootstrap interval of (encoder - reference) is at
            least ``-margin``. 0: the encoder must be at least as good, with 95% confidence.
    """

    encoder: str | None = None
    mode: Mode | None = None
    fraction: float = Field(default=1.0, gt=0, le=1)
    margin: float = Field(default=0.0, ge=0)


class FewShotConfig(_Frozen):
    """k-shot episodes for classification tasks (probe modes): ``k`` training samples per class.

    Args:
        shots: Samples per class, each at least 1.
        episodes: Draws per ``k`` (the cells' ``seed`` is the episode); the draws of one
            episode are nested over ``k``.
    """

    shots: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4, 8, 16], min_length=1)
    episodes: int = Field(default=10, ge=1)

    @field_validator("shots")
    @classmethod
    def _sorted_shots(cls, shots: list[int]) -> list[int]:
        return sorted(set(shots))


class BootstrapConfig(_Frozen):
    """Test-set bootstrap: resamples of the test items, the same for every cell of a test set.

    Args:
        resamples: Resamples per interval (percentile method, 95%).
        seed: Seeds the resamples.
        unit: ``group``: draw the test items' groups (patients, volumes, blocks: the task's
            ``group`` column) and keep each whole, because images of one group are not
            independent; items without a group are their own. ``item``: draw the images one by
            one whatever their groups (narrower intervals where groups hold several images).
    """

    resamples: int = Field(default=1000, ge=1000)
    seed: int = 0
    unit: BootstrapUnit = "group"


class StudyConfig(_Frozen):
    """Encoders x tasks x modes x fractions x seeds, and where the results go.

    Args:
        study_dir: Output folder; running the same study again resumes it.
        tasks: The task database (a list of task specs; in YAML also the path of a tasks file).
        task_names: Tasks to evaluate; default: all.
        encoders: Encoders to compare.
        modes: Evaluation modes; each task runs those that apply to its type (``linear`` and
            ``knn``: classification, multilabel; ``frozen-decoder``: segmentation, detection;
            ``linear-decoder``: segmentation; ``finetune``: all).
        task_modes: Task name -> its modes, replacing ``modes`` for that task.
        fractions: Shares of the training labels, each in (0, 1]; may be empty with ``few_shot``.
        seeds: Repetitions per fraction: a count (seeds 0..n-1) or a list of seeds.
        task_fractions: Task name -> its fractions, replacing ``fractions`` for that task (e.g.
            a dense task, whose cells train a decoder, at fewer fractions than the probes).
        task_seeds: Task name -> its seeds (a count or a list), replacing ``seeds``.
        few_shot: k-shot episodes (classification tasks, probe modes) besides the fractions.
        baselines: Encoders added to the study: ``random`` (the first encoder's architecture
            with random weights), ``pixels`` (standardised raw pixels; probe modes only) and
            ``imagenet`` (that architecture with timm's ImageNet weights, only when they are in
            the local Hugging Face cache). Default: all three when a task runs a probe mode;
            ``[]``: none. A baseline is not added when an encoder of the same name exists.
        image_size: Input side for every encoder; default: the first checkpoint's, else 224.
        task_image_size: Task name -> input side for that task, replacing ``image_size`` (e.g.
            a segmentation task with small structures at 128 while the others stay at 64).
        split_seed: Seeds the train/val/test assignment of rows without a split.
        val_fraction: Share of rows without a split that go to validation.
        test_fraction: Share of training rows held out as the test set, per center, when a
            task has no test rows.
        probe: Linear probe and kNN settings.
        finetune: Fine-tuning and frozen-decoder training settings.
        linear_decoder: The ``linear-decoder`` mode's feature levels and fit.
        cross_center: Also train on each center and test on every center (tasks with a
            ``center`` column; all modes, all seeds, fraction 1).
        centers: Named groups of center values, e.g. ``{north: [a, b], south: [c]}``; default:
            each center on its own.
        reference: The full-data score of the data-efficiency table.
        primary_metrics: Task name -> metric for curves, early stopping and data efficiency;
            default: the task type's ``primary_metric`` (balanced_accuracy, auroc for
            multilabel, mean_dice, map_50).
        bootstrap: Test-set bootstrap intervals and paired comparisons.
        keep_checkpoints: Save each trained model's best weights under ``checkpoints/``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``auto`` with several workers and
            GPUs: one GPU per worker).
        progress: Show a progress bar (a plain line at least every 30 s without a terminal).
        workers: Processes that run cells at once on this machine.
        threads_per_worker: Torch and BLAS threads of each worker; default: the CPU cores
            shared out among the workers.
        claim_timeout_s: A claimed cell whose worker has not been heard from (heartbeat) for
            this long is taken over by another worker.
    """

    study_dir: Path
    tasks: list[DatabaseTask] = Field(min_length=1)
    task_names: list[str] | None = None
    encoders: list[StudyEncoder] = Field(min_length=1)
    modes: list[Mode] = Field(default_factory=lambda: list(MODES), min_length=1)
    task_modes: dict[str, list[Mode]] = Field(default_factory=dict)
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: list(DEFAULT_FRACTIONS)
    )
    seeds: Annotated[int, Field(ge=1)] | list[int] = 3
    task_fractions: dict[str, list[Annotated[float, Field(gt=0, le=1)]]] = Field(default_factory=dict)
    task_seeds: dict[str, Annotated[int, Field(ge=1)] | list[int]] = Field(default_factory=dict)
    few_shot: FewShotConfig | None = None
    baselines: list[Baseline] | None = None
    image_size: int | None = Field(default=None, ge=16)
    task_image_size: dict[str, Annotated[int, Field(ge=16)]] = Field(default_factory=dict)
    split_seed: int = 0
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    probe: ProbeConfig = ProbeConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    linear_decoder: LinearDecoderConfig = LinearDecoderConfig()
    cross_center: bool = False
    centers: dict[str, list[str]] | None = None
    reference: ReferenceConfig = ReferenceConfig()
    primary_metrics: dict[str, str] = Field(default_factory=dict)
    bootstrap: BootstrapConfig = BootstrapConfig()
    keep_checkpoints: bool = False
    device: str = "auto"
    progress: bool = True
    workers: int = Field(default=1, ge=1)
    threads_per_worker: int | None = Field(default=None, ge=1)
    claim_timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _fractions_or_shots(self) -> StudyConfig:
        if not self.fractions and self.few_shot is None:
            raise ValueError("fractions: give at least one fraction (or few_shot episodes)")
        return self

    @field_validator("fractions")
    @classmethod
    def _sorted_fractions(cls, fractions: list[float]) -> list[float]:
        return sorted(set(fractions))

    @field_validator("task_fractions")
    @classmethod
    def _sorted_task_fractions(cls, by_task: dict[str, list[float]]) -> dict[str, list[float]]:
        return {name: sorted(set(fractions)) for name, fractions in by_task.items()}

    @property
    def seed_list(self) -> list[int]:
        """The seeds: ``range(seeds)`` for a count."""
        return _seed_list(self.seeds)

    def fractions_of(self, task: str) -> list[float]:
        """The fractions a task runs: its ``task_fractions`` entry or ``fractions``."""
        return self.task_fractions.get(task, self.fractions)

    def seeds_of(self, task: str) -> list[int]:
        """The seeds a task runs: its ``task_seeds`` entry or ``seeds``.

        Examples:
            >>> cfg = StudyConfig(study_dir=".", tasks=[{"name": "a", "type": "classification",
            ...     "classes": ["x", "y"], "source": {"path": "a.csv"}}],
            ...     encoders=[{"name": "e", "source": "resnet18"}], task_seeds={"a": 2})
            >>> cfg.seeds_of("a"), cfg.seeds_of("b")
            ([0, 1], [0, 1, 2])
        """
        return _seed_list(self.task_seeds.get(task, self.seeds))

    def modes_of(self, task: TaskType) -> list[Mode]:
        """The modes a task runs: its ``task_modes`` entry or ``modes``, those that apply to it."""
        return [m for m in self.task_modes.get(task.spec.name, self.modes) if m in task.evaluation_modes]

    @property
    def selected_tasks(self) -> list[TaskSpec]:
        """The task specs to evaluate, in ``task_names`` order (or database order)."""
        by_name = {t.name: t for t in self.tasks}
        return [by_name[n] for n in self.task_names] if self.task_names else list(self.tasks)


def _seed_list(seeds: int | list[int]) -> list[int]:
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


_STUDY_PATHS = path_keys("study_dir", "tasks", where=lambda value: isinstance(value, str))
_CHECKPOINTS = path_keys(
    "encoders.*.source", where=lambda value: isinstance(value, str) and looks_like_path(value)
)


def _is_study_path(key: str, value: Any) -> bool:
    return _STUDY_PATHS(key, value) or _CHECKPOINTS(key, value) or is_source_path(key, value)


def load_study_config(path: Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read a study config. Relative paths written in it (``study_dir``, ``tasks``, checkpoint
    folders, task sources) are relative to the file; those of ``overrides`` to the current folder.

    Raises:
        ConfigError: every problem of the file, one per line.
    """
    path = Path(path)
    raw = read_config(path, overrides, is_path=_is_study_path)
    cfg = validate_config(StudyConfig, raw, str(path))
    check_names(cfg, str(path))
    return cfg


def check_names(cfg: StudyConfig, source: str) -> None:
    """Names that refer to other entries (tasks, encoders) must exist, and names must be unique.

    Raises:
        ConfigError: one line per problem, each naming ``source`` and the key.
    """
    problems = []
    task_names = [t.name for t in cfg.tasks]
    encoder_names = [e.name for e in cfg.encoders]
    for key, names in (("tasks", task_names), ("encoders", encoder_names)):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"{source}: {key}: names must be unique; repeated: {', '.join(repeated)}")
    referring: tuple[tuple[str, list[str]], ...] = (
        ("task_names", cfg.task_names or []),
        ("task_modes", list(cfg.task_modes)),
        ("task_image_size", list(cfg.task_image_size)),
        ("task_fractions", list(cfg.task_fractions)),
        ("task_seeds", list(cfg.task_seeds)),
        ("primary_metrics", list(cfg.primary_metrics)),
    )
    for key, names in referring:
        problems += [
            f"{source}: {key}: {unknown_name_message('task', n, task_names)}"
            for n in names
            if n not in task_names
        ]
    reference = cfg.reference.encoder
    addable = [b for b in BASELINES if cfg.baselines is None or b in cfg.baselines]
    if reference is not None and reference not in encoder_names + addable:
        problems.append(
            f"{source}: reference.encoder: {unknown_name_message('encoder', reference, encoder_names)}"
        )
    if problems:
        raise ConfigError(problems)

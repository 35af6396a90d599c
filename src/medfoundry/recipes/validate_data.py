"""Recipe: check a task database without training (``medfoundry validate-data CONFIG.yaml``).

Every source is read, every sample decoded and checked (which also fills the preprocessing
cache, so a following ``pretrain`` starts at once), and a table per task is printed: samples,
classes and their counts, image sizes, modality, split sizes, and warnings (few examples,
class names that differ only in case, images enlarged a lot, an input size that the encoder's
patches do not divide). What reading changed or passed over is listed per file (alpha channels
dropped, palette images converted, DICOM objects without an image, annotations left out).
Problems of all tasks are collected and raised together, one line each; then nothing is cached.

CONFIG is a task database (a ``tasks:`` list, optionally with ``data:`` and ``seed:``), or a
pretraining config, whose ``tasks``, ``data``, ``seed``, model ``image_size`` and encoder are
used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.console import Console
from rich.table import Table

from medfoundry.config_io import apply_overrides, load_yaml, validate_config
from medfoundry.data import TaskData, discard_new_caches, load_task_data
from medfoundry.data.summary import COUNTED_AS, TaskSummary, summarize_task
from medfoundry.errors import ConfigError, DataError, MedfoundryError
from medfoundry.models.config import EncoderConfig
from medfoundry.recipes.pretrain.config import DataConfig, load_pretrain_config, read_tasks
from medfoundry.tasks import TASK_TYPES, build_task, with_classes
from medfoundry.tasks.database import is_source_path
from medfoundry.tasks.spec import DatabaseTask, TaskSpec, check_unique_names

__all__ = ["ValidateDataConfig", "load_validate_config", "run"]

SHOWN_LINES = 20


class ValidateDataConfig(BaseModel):
    """What ``validate-data`` checks.

    Args:
        tasks: The task database.
        data: Cache and error settings (``data.on_error: skip`` counts bad samples instead).
        seed: Seeds the split of records without a given one (as in pretraining).
        image_size: Cached side for tasks whose preprocessing gives none.
        encoder: A pretraining config's encoder: a warning if its patches do not divide
            ``image_size``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[DatabaseTask] = Field(min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    seed: int = 0
    image_size: int = Field(default=224, ge=8)
    encoder: EncoderConfig | None = None

    @model_validator(mode="after")
    def _unique_task_names(self) -> ValidateDataConfig:
        check_unique_names(self.tasks)
        return self


def load_validate_config(path: Path, overrides: Sequence[str] = ()) -> ValidateDataConfig:
    """Read a task database or a pretraining config (see module docstring).

    Raises:
        ConfigError: every problem of the file, one per line.
    """
    path = Path(path)
    raw = load_yaml(path)
    if isinstance(raw, dict) and "model" in raw:
        cfg = load_pretrain_config(path, overrides)
        return ValidateDataConfig(
            tasks=cfg.tasks,
            data=cfg.data,
            seed=cfg.seed,
            image_size=cfg.model.image_size,
            encoder=cfg.model.encoder,
        )
    raw = {"tasks": raw} if isinstance(raw, list) else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a list of tasks or a mapping with a 'tasks' list")
    raw = apply_overrides(raw, overrides, is_path=is_source_path)
    if "tasks" in raw:
        raw["tasks"] = read_tasks(raw["tasks"], path)
    return validate_config(ValidateDataConfig, raw, str(path))


def run(cfg: ValidateDataConfig, console: Console | None = None) -> list[TaskSummary]:
    """Check every task's data and print the summary; returns the summaries.

    Raises:
        ConfigError, DataError: every problem of every task (after printing the tasks that
            passed); the caches built by this call are then deleted.
    """
    if console is None:
        # rich wraps at 80 columns when writing to a file or pipe: too narrow for the tables
        console = Console() if Console().is_terminal else Console(width=160)
    summaries, checked, problems, only_config = [], [], [], True
    for spec in cfg.tasks:
        try:
            data, summary = _check_task(spec, cfg)
        except MedfoundryError as e:
            problems += [p if p.startswith("task '") else f"task '{spec.name}': {p}" for p in e.problems]
            only_config &= isinstance(e, ConfigError)
            continue
        checked.append(data)
        summaries.append(summary)
    if summaries:
        for table in _tables(cfg, summaries):
            console.print(table)
        for warning in _encoder_warnings(cfg):
            console.print(f"[yellow]warning[/]: {warning}", markup=True, highlight=False)
        for summary in summaries:
            for warning in summary.warnings:
                console.print(f"[yellow]warning[/]: task '{summary.name}': {warning}")
            _print_lines(console, summary, "skipped", summary.skipped, "problem(s), samples left out")
            _print_lines(console, summary, "read", summary.notes, "file(s) changed or passed over")
    if problems:
        discard_new_caches(checked)
        raise ConfigError(problems) if only_config else DataError(problems)
    console.print(f"[green]ok[/]: {len(summaries)} task(s), every sample decoded")
    return summaries


def _check_task(spec: TaskSpec, cfg: ValidateDataConfig) -> tuple[TaskData, TaskSummary]:
    target = TASK_TYPES.get(spec.type).target
    spec = with_classes(spec)
    task = build_task(spec)
    data = load_task_data(
        spec,
        target,
        seed=cfg.seed,
        val_fraction=cfg.data.val_fraction,
        size=cfg.image_size,
        cache=cfg.data.cache_settings(),
        ignore_index=task.ignore_index,
        on_error=cfg.data.on_error,
        prepare=("train", "val", "test"),
        require_val=False,
    )
    return data, summarize_task(spec.name, target, spec.classes, data=data)


def _encoder_warnings(cfg: ValidateDataConfig) -> list[str]:
    """What the model would make of these inputs (a patch size that does not divide them)."""
    if cfg.encoder is None:
        return []
    from medfoundry.models.encoder import create_encoder

    try:
        # no weights: only the architecture's input geometry matters here
        create_encoder(img_size=cfg.image_size, **{**cfg.encoder.model_dump(), "pretrained": False})
    except ConfigError as e:
        return [f"model.encoder: {p}" for p in e.problems]
    return []


def _tables(cfg: ValidateDataConfig, summaries: list[TaskSummary]) -> tuple[Table, Table]:
    """An overview (a row per task) and the class counts (a row per task and class)."""
    specs = {spec.name: spec for spec in cfg.tasks}
    overview = Table(title="tasks")
    for column in ("task", "type", "modality", "samples", "train/val/test", "image sizes (HxW)"):
        overview.add_column(column, justify="right" if column == "samples" else "left", overflow="fold")
    classes = Table(title="classes")
    for column in ("task", "class", "count", "counted as"):
        classes.add_column(column, justify="right" if column == "count" else "left", overflow="fold")
    for s in summaries:
        sizes = "-"
        if s.image_sizes:
            (h1, w1), (h2, w2) = s.image_sizes
            sizes = f"{h1}x{w1}" if (h1, w1) == (h2, w2) else f"{h1}x{w1} .. {h2}x{w2}"
        splits = "/".join(str(s.split_sizes[k]) for k in ("train", "val", "test"))
        spec = specs[s.name]
        overview.add_row(
            s.name, spec.type, spec.modality or "-", str(sum(s.split_sizes.values())), splits, sizes
        )
        for i, (name, count) in enumerate(s.class_counts.items()):
            classes.add_row(
                s.name if i == 0 else "", name, str(count), COUNTED_AS[s.target] if i == 0 else ""
            )
    return overview, classes


def _print_lines(console: Console, summary: TaskSummary, label: str, lines: list[str], what: str) -> None:
    if not lines:
        return
    console.print(f"[yellow]{label}[/]: task '{summary.name}': {len(lines)} {what}:")
    for line in lines[:SHOWN_LINES]:
        console.print(f"  {line}", markup=False, highlight=False)
    if len(lines) > SHOWN_LINES:
        console.print(f"  ... and {len(lines) - SHOWN_LINES} more")

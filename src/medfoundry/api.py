"""The public Python API: what the command line does, as functions.

``medfoundry.pretrain(config)`` and ``medfoundry.evaluate(study)`` run the recipes behind
``medfoundry pretrain`` and ``medfoundry evaluate``; ``medfoundry.load_task_database(path)``
reads and checks a task database; ``medfoundry.create_task(type, classes=...)`` builds a task
(head, normalised loss, metrics) with no data behind it; ``medfoundry.load_encoder(source)``
gives any encoder as ``.embed(images)``. Each takes what the command line takes (a config
object, a mapping of the same keys, or a YAML path) and raises the same one-line errors
(``ConfigError``, ``DataError``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from medfoundry.config_io import validate_config
from medfoundry.recipes import evaluate as evaluate_recipe
from medfoundry.recipes import pretrain as pretrain_recipe
from medfoundry.recipes.evaluate.config import StudyConfig, check_names, load_study_config
from medfoundry.recipes.pretrain.config import PretrainConfig, load_pretrain_config, read_monitor_tasks
from medfoundry.tasks import TaskSpec, TaskType, build_task
from medfoundry.tasks.database import read_tasks

__all__ = ["create_task", "evaluate", "pretrain"]


def pretrain(config: PretrainConfig | Mapping[str, Any] | str | Path, *, resume: bool = False) -> Path:
    """Multi-task pretraining, as ``medfoundry pretrain``; returns the run folder.

    Args:
        config: A ``PretrainConfig``, a mapping of its keys, or the path of a YAML config
            (relative paths in a file are relative to it).
        resume: Continue the run in ``run_dir`` from its last checkpoint.

    Returns:
        The run folder: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/last`` and ``best``.

    Raises:
        ConfigError, DataError: bad config or data, one line each, before anything is written.

    Examples:
        >>> import tempfile
        >>> from medfoundry.corpus.selections import MICROSCOPY, build_selection
        >>> folder = Path(tempfile.mkdtemp())
        >>> corpus = build_selection(folder / "db", "small", sources=MICROSCOPY)
        >>> run = pretrain({
        ...     "run_dir": str(folder / "run"), "tasks": str(corpus.labelled_tasks), "enable_progress": False,
        ...     "model": {"image_size": 32, "encoder": {"name": "resnet10t"}},
        ...     "training": {"max_steps": 1},
        ... })
        >>> sorted(p.name for p in (run / "checkpoints").iterdir())
        ['best', 'last']
    """
    if isinstance(config, str | Path):
        return pretrain_recipe.run(load_pretrain_config(Path(config)), resume=resume)
    if not isinstance(config, PretrainConfig):  # the monitor's task database too, like ``tasks``
        config = read_monitor_tasks(dict(config), Path.cwd() / "config")
    return pretrain_recipe.run(_validated(PretrainConfig, config, "config"), resume=resume)


def evaluate(study: StudyConfig | Mapping[str, Any] | str | Path) -> Path:
    """An evaluation study, as ``medfoundry evaluate``; returns the study folder.

    Args:
        study: A ``StudyConfig``, a mapping of its keys, or the path of a study YAML.

    Returns:
        The study folder: ``results.csv``, ``summary.csv``, ``efficiency.csv``, ``report.html`` ...

    Raises:
        ConfigError, DataError: bad study, data or encoders, one line each, before any work.

    Examples:
        >>> import tempfile
        >>> from medfoundry.corpus.selections import MICROSCOPY, build_selection
        >>> folder = Path(tempfile.mkdtemp())
        >>> corpus = build_selection(folder / "db", "small", sources=MICROSCOPY)
        >>> study = evaluate({
        ...     "study_dir": str(folder / "study"), "tasks": str(corpus.heldout_tasks),
        ...     "task_names": ["heldout_nuclei_count"],
        ...     "image_size": 32, "modes": ["linear"], "fractions": [1.0], "seeds": 1,
        ...     "baselines": [], "progress": False,
        ...     "encoders": [{"name": "random", "source": "resnet10t", "pretrained": False}],
        ... })
        >>> (study / "results.csv").is_file()
        True
    """
    if isinstance(study, str | Path):
        return evaluate_recipe.run(load_study_config(Path(study)))
    cfg = _validated(StudyConfig, study, "study")
    check_names(cfg, "study")
    return evaluate_recipe.run(cfg)


def create_task(
    type: str,
    *,
    classes: Sequence[str] = (),
    name: str = "task",
    options: Mapping[str, Any] | None = None,
) -> TaskType:
    """A task of a registered type with no data behind it: its head, loss and metrics.

    Args:
        type: A registered task type (``medfoundry ls`` lists them).
        classes: Class names, in label order (none for ``masked_image``).
        name: The task's name.
        options: Task-type options (e.g. ``{"ignore_index": 255}`` for segmentation).

    Raises:
        ConfigError: an unknown type or options the type does not take.

    Examples:
        >>> import torch
        >>> task = create_task("classification", classes=["benign", "malignant", "normal"])
        >>> head = task.build_head(512)
        >>> logits = head(torch.zeros(4, 512)) * 0  # a uniform prediction
        >>> round(task.loss(logits, torch.tensor([0, 1, 2, 0])).item(), 4)  # chance level is 1
        1.0
    """
    spec = TaskSpec(name=name, type=type, classes=list(classes), options=dict(options or {}))
    return build_task(spec)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def _validated(model: type[ConfigT], value: ConfigT | Mapping[str, Any], name: str) -> ConfigT:
    """A config object as given, or one validated from a mapping of its keys (``tasks`` may be
    the path of a task database; relative paths are relative to the working folder)."""
    if isinstance(value, model):
        return value
    raw = dict(value)
    if "tasks" in raw:
        raw["tasks"] = read_tasks(raw["tasks"], Path.cwd() / name)
    return validate_config(model, raw, name)

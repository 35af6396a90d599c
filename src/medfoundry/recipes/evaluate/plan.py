"""The plan of an evaluation study: every check of the user's input, then the cells.

``plan_study(cfg)`` reads top to bottom and raises every user error (one line each) before the
study folder is touched: task classes (read from the data where the database lists none, as
every command does), task types without metrics (skipped with a note), metrics and modes,
the data, fractions that cannot be honoured, k-shot sizes, the encoders and their baselines,
the reference. What it returns is all a worker needs: the tasks, their data, the encoders, the
cells in order and the digest of each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
from pydantic import BaseModel

from medfoundry.data.few_shot import smallest_class
from medfoundry.errors import ConfigError, DataError
from medfoundry.evaluation.efficiency_table import Reference
from medfoundry.evaluation.pretrained_encoder import looks_like_path
from medfoundry.evaluation.study_cells import Cell
from medfoundry.evaluation.study_data import StudyTaskData, load_study_task_data
from medfoundry.models.config import ModelConfig
from medfoundry.recipes.evaluate.config import (
    BASELINES,
    PIXELS,
    PROBE_MODES,
    Mode,
    StudyConfig,
    StudyEncoder,
    check_names,
)
from medfoundry.recipes.evaluate.encoders import Encoder, check_levels, load_study_encoders
from medfoundry.released import is_released
from medfoundry.tasks import TaskType, build_task, with_classes
from medfoundry.tasks.scores import LOWER_IS_BETTER
from medfoundry.training.checkpoint import load_checkpoint_config
from medfoundry.training.device import resolve_device, resolve_precision

__all__ = ["PROTOCOL", "StudyPlan", "plan_study"]

log = logging.getLogger(__name__)

PROTOCOL = 2
"""Version of what a cell computes and stores; part of every digest (cells of older versions,
without per-item results, run again)."""


@dataclass
class StudyPlan:
    """Everything a study's workers need, checked.

    Attributes:
        cfg: The study config with every task's classes resolved (written as ``study.yaml``).
        tasks: Evaluated task name -> task (tasks without metrics left out).
        data: Task name -> its fixed splits.
        primary: Task name -> primary metric.
        encoders: Encoder name -> encoder, the study's and the baselines added to it.
        sized: (encoder name, input side) -> that encoder at a ``task_image_size``.
        encoder_specs: Encoder name -> its spec (baselines included).
        reference: The data-efficiency reference, or ``None``.
        comparisons: Encoders of the paired table (the reference and the baselines).
        cells: Every cell, in order.
        digests: Cell -> digest of what its result depends on.
        notes: Lines for the log and the report (skipped tasks, missing baselines).
    """

    cfg: StudyConfig
    tasks: dict[str, TaskType]
    data: dict[str, StudyTaskData]
    primary: dict[str, str]
    encoders: dict[str, Encoder]
    encoder_specs: dict[str, StudyEncoder]
    reference: Reference | None
    comparisons: list[str]
    cells: list[Cell]
    digests: dict[Cell, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sized: dict[tuple[str, int], Encoder] = field(default_factory=dict)

    def encoder_of(self, cell: Cell) -> Encoder:
        """The cell's encoder at its task's input size (``task_image_size``, else the study's)."""
        size = self.cfg.task_image_size.get(cell.task)
        return self.sized.get((cell.encoder, size or 0)) or self.encoders[cell.encoder]


def plan_study(cfg: StudyConfig, device: Any = None) -> StudyPlan:
    """Check the study and plan its cells (see the module docstring).

    Args:
        cfg: The study config.
        device: Where encoders live; default: ``cfg.device``.

    Raises:
        ConfigError, DataError: every problem of the user's input, before anything is written.
    """
    check_names(cfg, "study")
    notes: list[str] = []
    tasks = _evaluable_tasks(cfg, notes)
    cfg = cfg.model_copy(
        update={"tasks": [s if s.name not in tasks else tasks[s.name].spec for s in cfg.tasks]}
    )
    primary = {n: cfg.primary_metrics.get(n) or str(t.primary_metric) for n, t in tasks.items()}
    _check_metrics_and_modes(cfg, tasks, primary)
    data = {
        name: load_study_task_data(
            task.spec,
            task,
            split_seed=cfg.split_seed,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            centers=cfg.centers,
        )
        for name, task in tasks.items()
    }
    if cfg.cross_center and not any(d.centers for d in data.values()):
        raise ConfigError(f"cross_center: none of the tasks {', '.join(data)} has a center column")
    _check_subsets(cfg, tasks, data)
    device = device if device is not None else resolve_device(cfg.device, "device")
    # fp16 on a CPU fails here, not after the probes
    resolve_precision(cfg.finetune.precision, device, "finetune.precision")
    _check_pixel_modes(cfg, tasks)
    encoder_specs, encoders, sized = _load_encoders(cfg, tasks, notes, device)
    reference = _reference(cfg, encoder_specs)
    baselines = [n for n in encoder_specs if n not in {e.name for e in cfg.encoders}]
    comparisons = list(dict.fromkeys([*([reference.encoder] if reference else []), *baselines]))
    cells = _cells(cfg, tasks, data, encoder_specs)
    plan = StudyPlan(
        cfg,
        tasks,
        data,
        primary,
        encoders,
        encoder_specs,
        reference,
        comparisons,
        cells,
        notes=notes,
        sized=sized,
    )
    plan.digests = {cell: _digest(cell, plan) for cell in cells}
    return plan


def _evaluable_tasks(cfg: StudyConfig, notes: list[str]) -> dict[str, TaskType]:
    """The selected tasks with their classes, those without metrics left out (with a note).

    Raises:
        ConfigError: the classes of some task cannot be read, or no task can be evaluated.
    """
    specs, problems = [], []
    for spec in cfg.selected_tasks:
        try:
            specs.append(with_classes(spec))
        except (ConfigError, DataError) as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    tasks: dict[str, TaskType] = {}
    for spec in specs:
        task = build_task(spec)
        if task.primary_metric is None:  # e.g. masked_image: nothing to score on held-out data
            notes.append(f"task '{spec.name}' ({spec.type}) has no metrics to evaluate: skipped")
            continue
        tasks[spec.name] = task
    if not tasks:
        raise ConfigError(
            f"task_names: none of the tasks ({', '.join(s.name for s in specs)}) can be evaluated"
        )
    return tasks


def _load_encoders(
    cfg: StudyConfig, tasks: dict[str, TaskType], notes: list[str], device: Any
) -> tuple[dict[str, StudyEncoder], dict[str, Encoder], dict[tuple[str, int], Encoder]]:
    """The study's encoders and its baselines: specs, loaded encoders, and those loaded again at
    each task's own input size (``task_image_size``)."""
    own = {e.name: e for e in cfg.encoders}
    encoders = load_study_encoders(cfg, own, device)  # the study's own first: their errors, not a baseline's
    encoder_specs = {**own, **_baselines(cfg, tasks, notes)}
    encoders.update(
        load_study_encoders(cfg, {n: e for n, e in encoder_specs.items() if n not in own}, device)
    )
    check_levels(cfg, encoders)
    sizes = {size for name, size in cfg.task_image_size.items() if name in tasks}
    sized = {
        (name, size): encoder
        for size in sizes - {next(iter(encoders.values())).image_size}
        for name, encoder in load_study_encoders(cfg, encoder_specs, device, size).items()
    }
    return encoder_specs, encoders, sized


def _check_metrics_and_modes(cfg: StudyConfig, tasks: dict[str, TaskType], primary: dict[str, str]) -> None:
    problems = []
    for name, task in tasks.items():
        computed = task.metrics().compute()  # an empty accumulator still names its metrics
        metrics = ", ".join(computed)
        if primary[name] not in computed:
            problems.append(
                f"primary_metrics.{name}: '{primary[name]}' is not a metric of this task ({metrics})"
            )
        elif primary[name] in LOWER_IS_BETTER:
            problems.append(
                f"primary_metrics.{name}: '{primary[name]}' is lower-is-better and cannot rank models "
                "(it is reported for every cell anyway)"
            )
        applicable = task.evaluation_modes
        chosen = cfg.task_modes.get(name)
        for mode in chosen or []:
            if mode not in applicable:
                modes = ", ".join(applicable)
                problems.append(f"task_modes.{name}: '{mode}' does not apply to {task.spec.type} ({modes})")
        if chosen == [] or (chosen is None and not cfg.modes_of(task)):
            problems.append(
                f"task '{name}' ({task.spec.type}): no mode to run (applicable: {', '.join(applicable)})"
            )
    explicit = cfg.modes if "modes" in cfg.model_fields_set else []  # the default lists every mode
    for mode in explicit:
        if not any(mode in task.evaluation_modes for task in tasks.values()):
            types = ", ".join(sorted({t.spec.type for t in tasks.values()}))
            problems.append(f"modes: '{mode}' applies to none of the tasks (their types: {types})")
    if problems:
        raise ConfigError(problems)


def _check_subsets(cfg: StudyConfig, tasks: dict[str, TaskType], data: dict[str, StudyTaskData]) -> None:
    """Every fraction must hold every class at least once; every class must have ``k`` samples."""
    problems = []
    for name, task_data in data.items():
        n = len(task_data.splits["train"])
        seeds = cfg.seeds_of(name)
        needed = max((task_data.train_fractions(seed).covering_size for seed in seeds), default=0)
        key = "task_fractions" if name in cfg.task_fractions else "fractions"
        for fraction in cfg.fractions_of(name):
            if max(1, round(fraction * n)) < needed:
                problems.append(
                    f"{key}: {fraction:g} of task '{name}' is {round(fraction * n)} of its {n} training "
                    f"samples, fewer than the {needed} it takes to show each class once; use fractions of "
                    f"at least {math.ceil(1000 * needed / n) / 1000:g}"
                )
        if cfg.few_shot is not None and tasks[name].probe_targets == "one_label":
            label, count = smallest_class([r.label for r in task_data.splits["train"] if r.label is not None])
            too_many = [k for k in cfg.few_shot.shots if k > count]
            if too_many:
                problems.append(
                    f"few_shot.shots: {too_many[0]} is more than task '{name}' has of class "
                    f"'{tasks[name].spec.classes[label]}' ({count} training samples); use at most {count}"
                )
    if problems:
        raise ConfigError(problems)


def _baselines(cfg: StudyConfig, tasks: dict[str, TaskType], notes: list[str]) -> dict[str, StudyEncoder]:
    """The baselines the study asks for (default: all, when a probe runs) that it does not name."""
    names = {e.name for e in cfg.encoders}
    encoders: dict[str, StudyEncoder] = {}
    runs_probes = any(mode in PROBE_MODES for task in tasks.values() for mode in cfg.modes_of(task))
    wanted = cfg.baselines if cfg.baselines is not None else (list(BASELINES) if runs_probes else [])
    base = next((e for e in cfg.encoders if not e.is_pixels and e.pretrained), None)
    for name in wanted:
        if name in names:
            continue  # the study names its own encoder so
        if name == "pixels":
            encoders[name] = StudyEncoder(name=name, source=PIXELS)
        elif base is None:
            notes.append(
                f"baselines: no encoder with weights to take the architecture of '{name}' from: not added"
            )
        elif name == "random":
            if any(e.source == base.source and not e.pretrained for e in cfg.encoders):
                continue  # already in the study under another name
            encoders[name] = base.model_copy(update={"name": name, "pretrained": False})
        else:
            imagenet = _imagenet_baseline(base, notes)
            if imagenet is not None:
                encoders[name] = imagenet
    return encoders


def _imagenet_baseline(base: StudyEncoder, notes: list[str]) -> StudyEncoder | None:
    """The base encoder's architecture with timm's ImageNet weights, if they are cached locally."""
    architecture = base.source
    if looks_like_path(base.source) or is_released(base.source):
        architecture = ModelConfig.model_validate(
            load_checkpoint_config(Path(base.source))["model"]
        ).encoder.name
    weights = cached_timm_weights(architecture)
    if weights is None:
        notes.append(
            f"baselines: imagenet: no ImageNet weights of '{architecture}' in the local Hugging Face "
            'cache: not added (download them once with: python -c "import timm; '
            f"timm.create_model('{architecture}', pretrained=True)\")"
        )
        return None
    overlay = {"pretrained_cfg_overlay": {"source": "", "file": str(weights)}}
    return StudyEncoder(name="imagenet", source=architecture, model_kwargs=overlay)


def cached_timm_weights(name: str) -> Path | None:
    """The file of timm's default pretrained weights of ``name`` in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    pretrained = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    hub_id = getattr(pretrained, "hf_hub_id", None)
    if not isinstance(hub_id, str):
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str):
            return Path(path)
    return None


def _check_pixel_modes(cfg: StudyConfig, tasks: dict[str, TaskType]) -> None:
    """An encoder of ``source: pixels`` named by the study must run probe modes only."""
    problems = []
    for encoder in (e for e in cfg.encoders if e.is_pixels):
        trained = {
            task.spec.name: [m for m in cfg.modes_of(task) if m not in PROBE_MODES] for task in tasks.values()
        }
        listed = [f"'{name}' ({', '.join(modes)})" for name, modes in trained.items() if modes]
        if listed:
            problems.append(
                f"encoders.{encoder.name}: the pixels encoder has no weights to train, but task(s) "
                f"{', '.join(listed)} run training modes; set task_modes, or leave the pixels baseline to "
                "'baselines' (which runs it in the probe modes only)"
            )
    if problems:
        raise ConfigError(problems)


def _reference(cfg: StudyConfig, encoders: dict[str, StudyEncoder]) -> Reference | None:
    r = cfg.reference
    name = r.encoder or next(
        (e.name for e in encoders.values() if not e.pretrained and not e.is_pixels), None
    )
    if name is None:
        log.warning("no encoder with pretrained: false and no reference.encoder: no data-efficiency table")
        return None
    if name not in encoders:
        raise ConfigError(f"reference.encoder: '{name}' is not in the study (see the baselines notes above)")
    return Reference(name, r.mode, r.fraction, r.margin)


def _cells(
    cfg: StudyConfig,
    tasks: dict[str, TaskType],
    data: dict[str, StudyTaskData],
    encoders: dict[str, StudyEncoder],
) -> list[Cell]:
    cells = []
    for name, task in tasks.items():
        # centers without training rows are only tested on
        centers = (
            [c for c in data[name].centers if data[name].center_records("train", c)]
            if cfg.cross_center
            else []
        )
        shots = cfg.few_shot.shots if cfg.few_shot is not None and task.probe_targets == "one_label" else []
        episodes = range(cfg.few_shot.episodes) if cfg.few_shot is not None else range(0)
        for encoder in encoders.values():
            modes: list[Mode] = [m for m in cfg.modes_of(task) if not encoder.is_pixels or m in PROBE_MODES]
            for mode in modes:
                for seed in cfg.seeds_of(name):
                    cells += [Cell(encoder.name, name, mode, f, seed) for f in cfg.fractions_of(name)]
                    cells += [Cell(encoder.name, name, mode, 1.0, seed, center) for center in centers]
                if mode in PROBE_MODES:
                    cells += [
                        Cell(encoder.name, name, mode, None, e, shots=k) for e in episodes for k in shots
                    ]
    return cells


def _digest(cell: Cell, plan: StudyPlan) -> str:
    """Hash of everything a cell's result depends on: a change re-runs the cell."""
    encoder, task_data, cfg = plan.encoder_of(cell), plan.data[cell.task], plan.cfg
    settings: BaseModel = cfg.probe if cell.mode in PROBE_MODES else cfg.finetune
    if cell.mode == "linear-decoder":
        settings = cfg.linear_decoder
    payload = {
        "protocol": PROTOCOL,
        "weights": encoder.weights_sha256,
        "image_size": encoder.image_size,
        "task": task_data.spec.model_dump(mode="json"),
        "data": task_data.digest,
        "centers": {k: sorted(v) for k, v in task_data.centers.items()},
        "metric": plan.primary[cell.task],
        "settings": settings.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

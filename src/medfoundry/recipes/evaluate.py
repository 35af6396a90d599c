"""Recipe: an evaluation study (``medfoundry evaluate STUDY.yaml``).

``run(cfg)`` reads top to bottom: check tasks, modes, data and encoders (every user error is
raised here, before the study folder is touched); plan the cells (encoders x tasks x modes x
fractions x seeds, plus train-on-one-center cells); run the cells that are not finished yet,
extracting each encoder's features on each task once for all its probe cells; then derive
summary, data-efficiency table and report from ``results.csv``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from rich.progress import MofNCompleteColumn, Progress, TextColumn

from medfoundry.errors import ConfigError
from medfoundry.evaluation.cell_runs import FeatureTable, run_probe_cell, run_training_cell
from medfoundry.evaluation.features import cached_features
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder, load_encoder, looks_like_path
from medfoundry.evaluation.report import write_study_outputs
from medfoundry.evaluation.study_cells import Cell, CellStore
from medfoundry.evaluation.study_data import TaskData, load_task_data
from medfoundry.evaluation.study_pixels import StudyPixels
from medfoundry.models.config import ModelConfig
from medfoundry.recipes.evaluate_config import MODES_BY_FEATURE, PRIMARY_METRICS, StudyConfig, check_names
from medfoundry.safe_writes import make_folder, refuse_links
from medfoundry.tasks import TaskType, build_task
from medfoundry.training.checkpoint import load_checkpoint_config, save_checkpoint
from medfoundry.training.device import resolve_device, resolve_precision

__all__ = ["run"]

log = logging.getLogger(__name__)

PROBE_MODES = ("linear", "knn")


def run(cfg: StudyConfig) -> Path:
    """Run (or resume) the study; returns the study folder.

    Raises:
        ConfigError, DataError: unknown tasks, encoders or metrics, modes that apply to no task,
            unreadable data, folders that are not checkpoints, ImageNet weights that cannot be
            downloaded, before anything is written.
    """
    # --- everything that can fail on user input, before writing anything ---
    check_names(cfg, "study")
    specs = cfg.selected_tasks
    tasks: dict[str, TaskType] = {spec.name: build_task(spec) for spec in specs}
    primary = {s.name: cfg.primary_metrics.get(s.name, PRIMARY_METRICS[s.type]) for s in specs}
    _check_metrics_and_modes(cfg, tasks, primary)
    data = {
        s.name: load_task_data(
            s, tasks[s.name], cfg.split_seed, cfg.val_fraction, cfg.test_fraction, cfg.centers
        )
        for s in specs
    }
    if cfg.cross_center and not any(d.centers for d in data.values()):
        raise ConfigError(f"cross_center: none of the tasks {', '.join(data)} has a center column")
    device = resolve_device(cfg.device)
    resolve_precision(cfg.finetune.precision, device)  # fp16 on a CPU fails here, not after the probes
    encoders = _load_encoders(cfg, device)
    reference = _reference(cfg)

    # --- the plan: which cells exist, which are finished ---
    study_dir = Path(cfg.study_dir)
    refuse_links(study_dir, "study folder")  # a rerun resumes whatever folder it is given
    make_folder(study_dir, "study_dir")
    (study_dir / "study.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    plan = _plan(cfg, tasks, data)
    store = CellStore(study_dir, {cell: _digest(cell, cfg, encoders, data, primary) for cell in plan})
    pending = store.pending()
    for name, task_data in data.items():
        if task_data.held_out:
            log.info("task %s has no test rows: %d training rows held out as test", name, task_data.held_out)
    log.info(
        "%d cells, %d finished before, %d to run, device %s",
        len(plan),
        len(plan) - len(pending),
        len(pending),
        device,
    )

    # --- the cells ---
    progress = Progress(
        *Progress.get_default_columns(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[cell]}"),
        disable=not cfg.progress,
    )
    bar = progress.add_task("evaluate", total=len(plan), completed=len(plan) - len(pending), cell="")
    pixels = {
        name: StudyPixels(task_data, study_dir / "pixels", cfg.finetune.num_workers)
        for name, task_data in data.items()
    }
    with progress:
        for encoder_name, encoder in encoders.items():
            for task_name, task_data in data.items():
                cells = [c for c in pending if (c.encoder, c.task) == (encoder_name, task_name)]
                features = None
                if any(c.mode in PROBE_MODES for c in cells):  # once for all fractions, seeds, probes
                    records = task_data.records
                    extracted = cached_features(
                        encoder,
                        records,
                        study_dir / "features",
                        cfg.probe.batch_size,
                        cfg.probe.num_workers,
                        task_data.spec.preprocessing,
                        partial(pixels[task_name].arrays, records, encoder.image_size),
                    )
                    features = FeatureTable.build(extracted, records)
                for cell in cells:
                    progress.update(bar, cell=str(cell))
                    if features is not None and cell.mode in PROBE_MODES:
                        rows = run_probe_cell(cell, task_data, features, cfg.probe)
                    else:
                        rows, result = run_training_cell(
                            cell, task_data, encoder, primary[task_name], cfg.finetune, pixels[task_name]
                        )
                        if cfg.keep_checkpoints:
                            _save_model(study_dir / "checkpoints" / cell.id, result, task_data, cell)
                    store.save(cell, rows)
                    store.write_results()
                    progress.advance(bar)
    store.write_results()
    outputs = write_study_outputs(study_dir, primary, reference, title=f"medfoundry study: {study_dir.name}")
    log.info("results: %s; report: %s", study_dir / "results.csv", outputs.report)
    return study_dir


def _check_metrics_and_modes(cfg: StudyConfig, tasks: dict[str, TaskType], primary: dict[str, str]) -> None:
    problems = []
    for name, task in tasks.items():
        metrics = ", ".join(task.metrics().compute())  # an empty accumulator still names its metrics
        if primary[name] not in task.metrics().compute():
            problems.append(
                f"primary_metrics.{name}: '{primary[name]}' is not a metric of this task ({metrics})"
            )
        applicable = MODES_BY_FEATURE[task.feature]
        chosen = cfg.task_modes.get(name)
        for mode in chosen or []:
            if mode not in applicable:
                modes = ", ".join(applicable)
                problems.append(f"task_modes.{name}: '{mode}' does not apply to {task.spec.type} ({modes})")
        if chosen == [] or (chosen is None and not cfg.modes_of(task.spec, task.feature)):
            problems.append(
                f"task '{name}' ({task.spec.type}): no mode to run (applicable: {', '.join(applicable)})"
            )
    explicit = cfg.modes if "modes" in cfg.model_fields_set else []  # the default lists every mode
    for mode in explicit:
        if not any(mode in MODES_BY_FEATURE[task.feature] for task in tasks.values()):
            types = ", ".join(sorted({t.spec.type for t in tasks.values()}))
            problems.append(f"modes: '{mode}' applies to none of the tasks (their types: {types})")
    if problems:
        raise ConfigError(problems)


def _load_encoders(cfg: StudyConfig, device: Any) -> dict[str, PretrainedEncoder]:
    """Every encoder at the study's input size; all problems reported together."""
    size = cfg.image_size or _first_checkpoint_size(cfg) or 224
    encoders, problems = {}, []
    for e in cfg.encoders:
        try:
            encoders[e.name] = load_encoder(e.source, e.pretrained, size, e.model_kwargs, device=device)
        except ConfigError as error:
            problems += [f"encoders.{e.name}: {p}" for p in error.problems]
    if problems:
        raise ConfigError(problems)
    return encoders


def _first_checkpoint_size(cfg: StudyConfig) -> int | None:
    for e in cfg.encoders:
        if looks_like_path(e.source) and Path(e.source).is_dir():
            return ModelConfig.model_validate(load_checkpoint_config(Path(e.source))["model"]).image_size
    return None


def _reference(cfg: StudyConfig) -> tuple[str, str | None, float] | None:
    r = cfg.reference
    encoder = r.encoder or next((e.name for e in cfg.encoders if not e.pretrained), None)
    if encoder is None:
        log.warning("no encoder with pretrained: false and no reference.encoder: no data-efficiency table")
        return None
    return encoder, r.mode, r.fraction


def _plan(cfg: StudyConfig, tasks: dict[str, TaskType], data: dict[str, TaskData]) -> list[Cell]:
    cells = []
    for name, task in tasks.items():
        # centers without training rows are only tested on
        centers = (
            [c for c in data[name].centers if data[name].center_records("train", c)]
            if cfg.cross_center
            else []
        )
        for encoder in cfg.encoders:
            for mode in cfg.modes_of(task.spec, task.feature):
                for seed in cfg.seed_list:
                    cells += [Cell(encoder.name, name, mode, fraction, seed) for fraction in cfg.fractions]
                    cells += [Cell(encoder.name, name, mode, 1.0, seed, center) for center in centers]
    return cells


def _digest(
    cell: Cell,
    cfg: StudyConfig,
    encoders: dict[str, PretrainedEncoder],
    data: dict[str, TaskData],
    primary: dict[str, str],
) -> str:
    """Hash of everything a cell's result depends on: a change re-runs the cell."""
    encoder, task_data = encoders[cell.encoder], data[cell.task]
    settings = cfg.probe if cell.mode in PROBE_MODES else cfg.finetune
    payload = {
        "weights": encoder.weights_sha256,
        "image_size": encoder.image_size,
        "task": task_data.spec.model_dump(mode="json"),
        "data": task_data.digest,
        "centers": {k: sorted(v) for k, v in task_data.centers.items()},
        "metric": primary[cell.task],
        "settings": settings.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _save_model(path: Path, result: Any, task_data: TaskData, cell: Cell) -> None:
    config = {
        "model": result.model_config.model_dump(mode="json"),
        "tasks": [task_data.spec.model_dump(mode="json")],
        "evaluation": {"cell": str(cell), "best_step": result.best_step, "best_val_score": result.best_score},
    }
    save_checkpoint(path, result.model, config)

"""Recipe: an evaluation study (``medfoundry evaluate STUDY.yaml [--workers N]``).

``run(cfg)`` reads top to bottom: plan the study (every user error is raised there, before the
study folder is touched: ``evaluate.plan``); refuse a folder that live workers are filling with
another config; write the resolved config; run the cells in this process and ``workers - 1``
more (``evaluate.worker``: atomic claims, so other jobs may share the folder too); then derive
results, summary, paired differences, data-efficiency table, ``results.json`` and the report
from the cells' files.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from medfoundry.config_io import load_yaml
from medfoundry.errors import ConfigError
from medfoundry.evaluation.bootstrap import Resampler
from medfoundry.evaluation.claims import ClaimBoard
from medfoundry.evaluation.efficiency_table import Reference
from medfoundry.evaluation.report import StudyOutputs, write_study_outputs
from medfoundry.evaluation.study_cells import atomic_write_text
from medfoundry.output_folders import check_output_folder, claim_output_folder
from medfoundry.recipes.evaluate.config import StudyConfig
from medfoundry.recipes.evaluate.plan import StudyPlan, plan_study
from medfoundry.recipes.evaluate.worker import spawned_worker, work, worker_device
from medfoundry.safe_writes import refuse_links, remove_orphans
from medfoundry.tasks import build_task

__all__ = ["RUN_ONLY_KEYS", "read_study", "run"]

log = logging.getLogger(__name__)

COMMAND = "evaluate"
STUDY_WRITE_FOLDERS = ("cells", "predictions", "features", "checkpoints")
"""The study folder's subfolders that workers write files into (under temporary names first)."""
RUN_ONLY_KEYS = ("progress", "workers", "threads_per_worker", "claim_timeout_s", "device")
"""Keys that change how a study runs, not what it computes (jobs sharing a folder may differ in them)."""


def run(cfg: StudyConfig) -> Path:
    """Run (or resume, or join) the study; returns the study folder.

    Raises:
        ConfigError, DataError: unknown tasks, encoders or metrics, modes that apply to no task,
            unreadable data, fractions or shots the data cannot honour, folders that are not
            checkpoints, a study folder that live workers fill with another config, a study
            folder holding files ``evaluate`` did not write (``output_folders``); all before
            anything is written.
        RuntimeError: a worker process failed and its cells could not be finished.
    """
    study_dir = Path(cfg.study_dir)
    check_output_folder(study_dir, COMMAND)
    plan = plan_study(cfg, worker_device(cfg, 0))
    refuse_links(study_dir, "study folder")  # a rerun resumes whatever folder it is given
    _check_shared_folder(plan.cfg, study_dir)
    claim_output_folder(study_dir, COMMAND)
    for folder in (study_dir, *(study_dir / name for name in STUDY_WRITE_FOLDERS)):
        remove_orphans(folder)  # what killed workers left half-written; a live worker's files stay
    # live workers of other jobs read it: never half a file
    atomic_write_text(
        study_dir / "study.yaml", yaml.safe_dump(plan.cfg.model_dump(mode="json"), sort_keys=False)
    )
    planned = {
        "primary_metrics": plan.primary,
        "reference": None if plan.reference is None else vars(plan.reference),
        "comparisons": plan.comparisons,
        "notes": plan.notes,
        "encoders": {name: spec.model_dump(mode="json") for name, spec in plan.encoder_specs.items()},
    }
    atomic_write_text(study_dir / "plan.json", json.dumps(planned, indent=1))
    for note in plan.notes:
        log.warning(note)
    for name, task_data in plan.data.items():
        if task_data.held_out:
            log.info("task %s has no test rows: %d training rows held out as test", name, task_data.held_out)
    log.info(
        "%d cells (%d encoders incl. baselines), %d workers, device %s",
        len(plan.cells),
        len(plan.encoders),
        cfg.workers,
        next(iter(plan.encoders.values())).device,
    )
    threads = cfg.threads_per_worker or (
        max(1, (os.cpu_count() or 1) // cfg.workers) if cfg.workers > 1 else None
    )
    context = multiprocessing.get_context("spawn")  # no forked torch state in the workers
    config = plan.cfg.model_dump(mode="json")
    children = [
        context.Process(
            target=spawned_worker, args=(config, i, cfg.workers), kwargs={"threads": threads}, daemon=False
        )
        for i in range(1, cfg.workers)
    ]
    for child in children:
        child.start()
    try:
        with _torch_threads(threads):
            work(plan, index=0, workers=cfg.workers, show_progress=cfg.progress)
    except BaseException:
        for child in children:  # their claims go stale with them; a rerun takes those cells up
            child.terminate()
        raise
    finally:
        for child in children:
            child.join()
    failed = [i + 1 for i, child in enumerate(children) if child.exitcode != 0]
    if failed:
        log.warning("worker(s) %s exited with an error; their cells were finished by the others", failed)
    outputs = write_outputs(plan, study_dir)
    log.info("results: %s; report: %s", outputs.results, outputs.report)
    return study_dir


def write_outputs(plan: StudyPlan, study_dir: Path) -> StudyOutputs:
    """The study's tables and report, from its cells' files."""
    cfg = plan.cfg
    return write_study_outputs(
        study_dir,
        tasks=plan.tasks,
        primary_metrics=plan.primary,
        reference=plan.reference,
        resampler=Resampler(cfg.bootstrap.resamples, cfg.bootstrap.seed, cfg.bootstrap.unit),
        comparisons=plan.comparisons,
        notes=plan.notes,
        title=f"medfoundry study: {study_dir.name}",
    )


def read_study(study_dir: Path) -> StudyOutputs:
    """Rebuild a study's tables and report from its folder alone (``study.yaml``, ``plan.json``,
    ``results.csv``, ``predictions/``); nothing is run, nothing needs the data or the encoders.

    Examples:
        ``tables = read_study(Path("runs/study_demo")).tables``; then ``tables.summary`` (scores
        over fractions and shots, with both intervals), ``tables.paired`` (each encoder minus the
        reference and the baselines, with paired intervals), ``tables.efficiency``.
    """
    study_dir = Path(study_dir)
    cfg = StudyConfig.model_validate(load_yaml(study_dir / "study.yaml"))
    planned = json.loads((study_dir / "plan.json").read_text())
    tasks = {s.name: build_task(s) for s in cfg.tasks if s.name in planned["primary_metrics"]}
    reference = Reference(**planned["reference"]) if planned["reference"] else None
    return write_study_outputs(
        study_dir,
        tasks=tasks,
        primary_metrics=planned["primary_metrics"],
        reference=reference,
        resampler=Resampler(cfg.bootstrap.resamples, cfg.bootstrap.seed, cfg.bootstrap.unit),
        comparisons=planned["comparisons"],
        notes=planned["notes"],
        title=f"medfoundry study: {study_dir.name}",
    )


def _check_shared_folder(cfg: StudyConfig, study_dir: Path) -> None:
    """A folder that live workers fill with another config is refused (naming what differs)."""
    written = study_dir / "study.yaml"
    if not written.is_file():
        return
    live = ClaimBoard(study_dir / "claims", cfg.claim_timeout_s).live_claims()
    if not live:
        return  # nobody works on it: resuming or extending it with a changed config is fine
    theirs = _computed(load_yaml(written) or {})
    ours = _computed(cfg.model_dump(mode="json"))
    differing = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if differing:
        tasks = ""
        if "tasks" in differing:
            mine = {t["name"]: t for t in ours.get("tasks", [])}
            other = {t["name"]: t for t in theirs.get("tasks", [])}
            changed = sorted(n for n in set(mine) | set(other) if mine.get(n) != other.get(n))
            tasks = f" (tasks: {', '.join(changed)})"
        raise ConfigError(
            f"study_dir: {study_dir} is being evaluated by {len(live)} live worker claim(s) with another "
            f"config, which differs in: {', '.join(differing)}{tasks}; let them finish, or choose "
            "another study_dir"
        )


def _computed(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS}


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """This process's torch threads for the study's duration (restored after)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

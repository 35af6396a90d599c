"""One worker of an evaluation study: claim a cell, run it, record it, until none is left.

Any number of workers can share a study folder: the processes of ``--workers N``, the jobs of a
SLURM array, processes on several nodes of a shared file system, the ranks of ``torchrun``.
Each cell is claimed atomically before it runs (``ClaimBoard``); a worker that dies leaves a
stale claim that another worker takes over, and since a cell is recorded only when it is
complete (``CellStore.save``), it is redone, never lost or recorded twice. Every worker returns
only when every cell of the plan is done (waiting for cells other workers hold), so whoever
finishes can write the study's outputs.

Workers visit the (encoder, task) groups of cells starting at different offsets, so they rarely
need the same features at once; the features of a group are extracted by one worker (a claim
guards it) and read by the others from the shared cache.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from medfoundry.evaluation.cell_runs import (
    CellOutcome,
    FeatureTable,
    run_linear_decoder_cell,
    run_probe_cell,
    run_training_cell,
)
from medfoundry.evaluation.claims import ClaimBoard
from medfoundry.evaluation.features import cached_features, features_path
from medfoundry.evaluation.level_choice import extracted_levels
from medfoundry.evaluation.linear_decoder import DenseFeatures, dense_features
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder
from medfoundry.evaluation.study_cells import Cell, CellStore
from medfoundry.evaluation.study_pixels import StudyPixels
from medfoundry.recipes.evaluate.config import PROBE_MODES, StudyConfig
from medfoundry.recipes.evaluate.plan import StudyPlan, plan_study
from medfoundry.training.checkpoint import save_checkpoint
from medfoundry.training.progress import CountProgress

__all__ = ["spawned_worker", "stop_with_parent", "work", "worker_device"]

log = logging.getLogger(__name__)

RESULTS_EVERY_S = 10.0
"""Rewrite ``results.csv`` at most this often while cells finish (and always at the end)."""


def work(plan: StudyPlan, *, index: int = 0, workers: int = 1, show_progress: bool = True) -> int:
    """Run cells of ``plan`` until every cell is done (by this worker or others).

    Args:
        plan: The study's plan.
        index: This worker's number (where in the cell groups it starts).
        workers: Workers started together (spreads the starting points).
        show_progress: Show progress (a bar, or plain lines without a terminal).

    Returns:
        The number of cells this worker ran.
    """
    return _Worker(plan, index, workers).run(show_progress)


class _Worker:
    """The state of one worker: the plan, the shared folder's cells and claims, cached features."""

    def __init__(self, plan: StudyPlan, index: int, workers: int) -> None:
        cfg = plan.cfg
        self.plan, self.study_dir = plan, Path(cfg.study_dir)
        self.store = CellStore(self.study_dir, plan.digests)
        self.board = ClaimBoard(self.study_dir / "claims", cfg.claim_timeout_s)
        self.pixels = {
            name: StudyPixels(task_data, self.study_dir / "pixels", cfg.finetune.num_workers)
            for name, task_data in plan.data.items()
        }
        groups = list(dict.fromkeys((c.encoder, c.task) for c in plan.cells))
        start = index * len(groups) // max(workers, 1)
        self.groups = groups[start:] + groups[:start]
        self.features: dict[tuple[str, str], FeatureTable] = {}
        self.dense: dict[tuple[str, str], DenseFeatures] = {}  # of linear-decoder cells
        self.pixels_ready: set[tuple[str, int]] = set()
        self.ran, self.written = 0, time.monotonic()

    def run(self, show_progress: bool) -> int:
        total = len(self.plan.cells)
        done = total - len(self.store.pending())
        progress = CountProgress("evaluate", total, unit="cells", done=done, enabled=show_progress)
        try:
            with self.board, progress:
                while pending := self.store.pending():
                    progress.update(total - len(pending))
                    if not self._one_pass(pending, progress):
                        # every remaining cell is held by another worker: wait (or for its claim to go stale)
                        time.sleep(min(2.0, self.plan.cfg.claim_timeout_s / 10))
                progress.update(total)
        finally:
            self.store.write_results()  # also when interrupted: what is finished is listed
        return self.ran

    def _one_pass(self, pending: list[Cell], progress: CountProgress) -> int:
        """Try every pending cell once, group by group; returns how many ran."""
        ran = 0
        for group in self.groups:
            features_busy = False  # another worker extracts them: leave the group's probe cells for now
            for cell in [c for c in pending if (c.encoder, c.task) == group]:
                if self.board.is_live(cell.id) or self.store.is_done(cell):
                    continue
                if not self._pixels(cell):
                    break  # another worker decodes this task's images: leave the group for now
                table = None
                if cell.mode in PROBE_MODES:
                    if features_busy:
                        continue
                    table = _features(self.plan, cell, self.features, self.pixels, self.board)
                    if table is None:
                        features_busy = True
                        continue
                if self._claim_and_run(cell, table, progress):
                    ran += 1
        return ran

    def _pixels(self, cell: Cell) -> bool:
        """Make sure the task's pixel cache exists at the encoder's size, built by one worker only;
        ``False`` while another worker builds it."""
        size = self.plan.encoder_of(cell).image_size
        if (cell.task, size) in self.pixels_ready:
            return True
        claim = f"pixels-{cell.task}-{size}"
        if not self.board.try_claim(claim):
            return False
        try:
            records = self.plan.data[cell.task].records
            self.pixels[cell.task].arrays(records, size)  # built here, or read from the shared cache
        finally:
            self.board.release(claim)
        self.pixels_ready.add((cell.task, size))
        return True

    def _claim_and_run(self, cell: Cell, table: FeatureTable | None, progress: CountProgress) -> bool:
        if not self.board.try_claim(cell.id):
            return False
        try:
            if self.store.is_done(cell):  # finished by another worker since we looked
                return False
            progress.update(len(self.plan.cells) - len(self.store.pending()), str(cell))
            outcome = _run(self.plan, cell, table, self.pixels, self.dense)
            self.store.save(cell, outcome.rows, outcome.items)
            if self.plan.cfg.keep_checkpoints and outcome.training is not None:
                _save_model(self.study_dir / "checkpoints" / cell.id, outcome, self.plan, cell)
        finally:
            self.board.release(cell.id)
        self.ran += 1
        if time.monotonic() - self.written > RESULTS_EVERY_S:
            self.store.write_results()
            self.written = time.monotonic()
        return True


def _features(
    plan: StudyPlan,
    cell: Cell,
    cache: dict[tuple[str, str], FeatureTable],
    pixels: dict[str, StudyPixels],
    board: ClaimBoard,
) -> FeatureTable | None:
    """The features of the cell's encoder on its task, extracted once for all workers; ``None``
    while another worker extracts them."""
    key = (cell.encoder, cell.task)
    if key in cache:
        return cache[key]
    cfg, encoder, task_data = plan.cfg, plan.encoder_of(cell), plan.data[cell.task]
    records = task_data.records
    folder = Path(cfg.study_dir) / "features"
    levels, level_columns = extracted_levels(
        encoder,
        feature_levels=cfg.probe.feature_levels,
        feature_level_choices=cfg.probe.feature_level_choices,
    )
    path = features_path(
        encoder,
        records,
        cache_dir=folder,
        preprocessing=task_data.spec.preprocessing,
        cached=True,
        feature_levels=levels,
    )
    claim = f"features-{path.stem[:16]}"
    if not path.is_file() and not board.try_claim(claim):
        return None
    try:
        extracted = cached_features(
            encoder,
            records,
            cache_dir=folder,
            batch_size=cfg.probe.batch_size,
            num_workers=cfg.probe.num_workers,
            preprocessing=task_data.spec.preprocessing,
            arrays=partial(pixels[cell.task].arrays, records, encoder.image_size),
            feature_levels=levels,
        )
    finally:
        board.release(claim)
    cache.clear()  # one (encoder, task) in memory at a time
    cache[key] = FeatureTable.build(extracted, records, level_columns)
    return cache[key]


def _run(
    plan: StudyPlan,
    cell: Cell,
    table: FeatureTable | None,
    pixels: dict[str, StudyPixels],
    dense: dict[tuple[str, str], DenseFeatures],
) -> CellOutcome:
    task_data = plan.data[cell.task]
    if table is not None:
        return run_probe_cell(cell, task_data, table, cfg=plan.cfg.probe)
    encoder = plan.encoder_of(cell)
    if not isinstance(encoder, PretrainedEncoder):  # the plan gives pixels encoders probe cells only
        raise TypeError(f"{cell}: encoder '{cell.encoder}' cannot be trained")
    if cell.mode == "linear-decoder":
        features = dense.get((cell.encoder, cell.task))
        if features is None:
            features = dense_features(
                encoder,
                task_data.task,
                task_data.records,
                cfg=plan.cfg.linear_decoder,
                preprocessing=task_data.spec.preprocessing,
                pixels=pixels[cell.task],
            )
            dense.clear()  # one (encoder, task) in memory at a time
            dense[(cell.encoder, cell.task)] = features
        cfg = plan.cfg.linear_decoder
        return run_linear_decoder_cell(cell, task_data, features, metric=plan.primary[cell.task], cfg=cfg)
    return run_training_cell(
        cell,
        task_data,
        encoder,
        metric=plan.primary[cell.task],
        cfg=plan.cfg.finetune,
        pixels=pixels[cell.task],
    )


def _save_model(path: Path, outcome: CellOutcome, plan: StudyPlan, cell: Cell) -> None:
    result = outcome.training
    assert result is not None  # only training cells are saved
    config = {
        "model": result.model_config.model_dump(mode="json"),
        "tasks": [plan.data[cell.task].spec.model_dump(mode="json")],
        "evaluation": {"cell": str(cell), "best_step": result.best_step, "best_val_score": result.best_score},
    }
    save_checkpoint(path, result.model, config)


def worker_device(cfg: StudyConfig, index: int) -> torch.device | None:
    """The device of worker ``index``: with ``device: auto`` and several GPUs, one GPU per worker
    (or the one ``torchrun`` gives this rank, ``LOCAL_RANK``); ``None``: the config's device."""
    if cfg.device != "auto" or not torch.cuda.is_available():
        return None
    local_rank = os.environ.get("LOCAL_RANK")
    number = int(local_rank) if local_rank is not None else index
    return torch.device(f"cuda:{number % torch.cuda.device_count()}")


def spawned_worker(config: dict[str, Any], index: int, workers: int, *, threads: int | None) -> None:
    """Entry point of a worker process started by ``--workers N`` (it plans the study again: the
    same checks, the same cells and digests)."""
    stop_with_parent()
    if threads is not None:
        torch.set_num_threads(threads)
    cfg = StudyConfig.model_validate(config)
    plan = plan_study(cfg, worker_device(cfg, index))
    work(plan, index=index, workers=workers, show_progress=False)


def stop_with_parent() -> None:
    """End this process when the process that started it is gone.

    ``medfoundry evaluate --workers N`` stops its workers on Ctrl-C or an error, but a parent
    killed from outside (SIGTERM from a scheduler, SIGKILL) has no chance to, and its workers
    would go on through the whole study. Each worker ends as the parent would have ended it
    (SIGTERM); its claims go stale and a rerun takes its cells up, as after any killed worker."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        signal.raise_signal(signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()

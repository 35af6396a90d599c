"""Benchmark: does cross-validating the transfer monitor over every non-test block make its scores steadier?

The transfer monitor ranks a run's steps (``select_best_by: transfer``). Scored on the held-out
tasks' validation splits, it ranks them by 5-7 spatial blocks per task; with ``folds: k`` it
pools training and validation and scores out-of-fold predictions over all 20-30 non-test blocks
(``medfoundry.evaluation.transfer_monitor``). This script scores a series of a run's checkpoints
and random weights both ways and reports, for each way:

- each score and its standard error from the study's bootstrap drawing BLOCKS whole
  (``Resampler``, 1,000 resamples): how far the score could move with other places;
- each checkpoint minus random weights, with its 95 % block interval (the same resamples for
  both, paired);
- with several ``--fold-seeds``, how much the cross-validated score moves with the deal of
  blocks into folds;
- the seconds of one evaluation (all tasks, both probes).

No test image is read (the monitor never decodes one).

Run (a folder of ``step_<N>`` checkpoint folders: copies of a run's ``checkpoints/last``)::

    python benchmarks/monitor_folds.py --corpus runs/corpus --run runs/series/snapshots

Writes ``benchmarks/results/<results-name>-cpu<t>t-fp32-torch<ver>.csv`` (one row per scoring,
encoder, task and probe, and the mean over tasks and probes) with its JSON sidecar, and prints
the means.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfoundry.evaluation.bootstrap import Resampler, percentile_interval
from medfoundry.evaluation.predictions import ITEM_GROUPS, item_layout
from medfoundry.evaluation.pretrained_encoder import load_encoder
from medfoundry.evaluation.probes import ProbeConfig, probe_accumulator
from medfoundry.evaluation.transfer_monitor import (
    TransferMonitor,
    TransferMonitorConfig,
    load_transfer_monitor,
)
from medfoundry.tasks import load_task_database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

TASKS = ["heldout_brain_region", "heldout_nuclei_count", "heldout_vesicle_membrane"]
RESAMPLES = 1000


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    database = load_task_database(args.corpus / "heldout_tasks.yaml")
    snapshots = _snapshots(args.run)
    first = snapshots[0][1]
    image_size = load_encoder(first).image_size
    scorings = {"validation": _monitor(database, args, image_size, folds=1, fold_seed=0)}
    scorings |= {
        f"cv{args.folds}-deal{s}": _monitor(database, args, image_size, folds=args.folds, fold_seed=s)
        for s in args.fold_seeds
    }
    encoders = [("random", 0, load_encoder(first, pretrained=False, seed=0).encoder)]
    encoders += [("pretrained", step, folder) for step, folder in snapshots]
    reference: dict[tuple[str, str, str], np.ndarray] = {}  # random weights' resamples
    rows: list[dict[str, Any]] = []
    for name, step, source in encoders:
        encoder = source if isinstance(source, torch.nn.Module) else load_encoder(source).encoder
        for scoring, monitor in scorings.items():
            rows += _scored(scoring, monitor, name, step, encoder, reference)
        print(f"{name} step {step}: done", flush=True)
    path = write_results(args.results_name, rows, torch.device("cpu"), "fp32")
    print_table([r for r in rows if r["task"] == "mean"])
    print(f"wrote {path}")


def _scored(
    scoring: str,
    monitor: TransferMonitor,
    name: str,
    step: int,
    encoder: torch.nn.Module,
    reference: dict[tuple[str, str, str], np.ndarray],
) -> list[dict[str, Any]]:
    """One evaluation's rows: per task and probe (and their mean) the score, its block standard
    error and, for a checkpoint, its difference from random weights with the block interval."""
    started = time.perf_counter()
    predicted = monitor.predict(encoder, device=torch.device("cpu"))  # what TransferMonitor.score scores
    seconds = time.perf_counter() - started
    resampler = Resampler(RESAMPLES)
    points, draws = {}, {}
    for task_name, scored in predicted.items():
        task = monitor.tasks[task_name].task
        metric = str(task.primary_metric)
        groups = item_layout(scored.records)[ITEM_GROUPS]
        for probe, probabilities in scored.probabilities.items():
            accumulator = probe_accumulator(task, probabilities, scored.targets)
            points[(task_name, probe)] = float(accumulator.compute()[metric])
            draws[(task_name, probe)] = resampler.scores(
                task.metrics(), accumulator.items(), n=len(scored.records), name=task_name, groups=groups
            )[metric]
    points[("mean", "both")] = float(np.mean(list(points.values())))
    draws[("mean", "both")] = np.mean(list(draws.values()), axis=0)
    rows = []
    for (task_name, probe), point in points.items():
        key = (scoring, task_name, probe)
        row: dict[str, Any] = {
            "scoring": scoring,
            "encoder": name,
            "step": step,
            "task": task_name,
            "probe": probe,
            "score": round(point, 4),
            "block_se": round(float(np.std(draws[(task_name, probe)])), 4),
            **dict.fromkeys(("minus_random", "ci95_low", "ci95_high"), ""),
            "seconds": round(seconds, 1),
        }
        if name == "random":
            reference[key] = np.asarray([point, *draws[(task_name, probe)]])
        else:
            low, high = percentile_interval(draws[(task_name, probe)] - reference[key][1:], (-1.0, 1.0))
            row |= {
                "minus_random": round(point - float(reference[key][0]), 4),
                "ci95_low": round(low, 4),
                "ci95_high": round(high, 4),
            }
        rows.append(row)
    return rows


def _monitor(
    database: list[Any], args: argparse.Namespace, image_size: int, *, folds: int, fold_seed: int
) -> TransferMonitor:
    cfg = TransferMonitorConfig(
        tasks=database,
        task_names=TASKS,
        max_images=args.max_images,
        probe=ProbeConfig(feature_levels=args.levels),
        folds=folds,
        fold_seed=fold_seed,
    )
    return load_transfer_monitor(cfg, image_size=image_size)


def _snapshots(folder: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"step_(\d+)", p.name))]
    if not found:
        raise SystemExit(f"{folder}: no step_<N> checkpoint folders")
    return sorted(found)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a built corpus folder")
    parser.add_argument("--run", type=Path, required=True, help="a folder of step_<N> checkpoint folders")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--levels", type=int, nargs="+", default=[-1], help="pooled levels (the released run's monitor: -1)"
    )
    parser.add_argument("--max-images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-name", default="monitor_folds")
    return parser.parse_args()


if __name__ == "__main__":
    main()

"""Benchmark: few-label comparisons cross-validated over the non-test blocks of the held-out tasks.

The held-out tasks are split by spatial block (docs/corpus.md): brain regions has 37 blocks
(23 train, 7 validation, 7 test), nuclei counts 24 (15 / 5 / 4), membranes 24 (15 / 5 / 4).
A validation split of 5-7 blocks ranks encoders by those few places, and the test split's
paired intervals resample images, not blocks. This script estimates each encoder's few-label
score from every non-test block instead, without reading a test image:

- the train and validation blocks are pooled and dealt into ``--folds`` folds (the first of
  up to 200 deals where every fold shows every class and every training pool has at least
  ``--max-shots`` images of each);
- for fold ``k``: probes train on the study's subsets (nested stratified fractions, k-shot
  episodes) of folds other than ``k`` and ``k + 1``, choose their levels and ``C`` on fold
  ``k + 1`` (the demo study's probe: ``feature_level_choices``, class-balanced logistic
  regression), and predict fold ``k``;
- the out-of-fold predictions of all folds are pooled, so every non-test image is scored once
  per cell and seed, and scored with balanced accuracy;
- encoder minus random weights, mean over seeds, with a 95 % percentile interval from the
  study's bootstrap drawing BLOCKS whole (``Resampler``; the same 1,000 resamples for both
  encoders).

For comparison only, ``--test-paired`` (a study's ``paired.csv``, e.g. the demo's) adds the
test split's paired difference for the same encoder, task and cell; nothing here is chosen on it.

Run (the corpus of ``medfoundry corpus runs/corpus``; a pretraining run's checkpoint)::

    python benchmarks/block_cv.py --corpus runs/corpus \\
        --encoder pretrained=runs/views96/resnet18/checkpoints/last \\
        --test-paired benchmarks/results/study_views96_step880-paired.csv

Writes ``benchmarks/results/<results-name>-cpu<t>t-fp32-torch<ver>.csv`` (one row per task,
encoder and cell: the cross-validated score, the difference from random weights with its block
interval, and the test split's difference when given) with its JSON sidecar, and prints it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfoundry.data.few_shot import few_shot_indices
from medfoundry.data.folds import group_folds
from medfoundry.data.fractions import NestedFractions
from medfoundry.data.record import Record
from medfoundry.evaluation.bootstrap import Resampler, percentile_interval
from medfoundry.evaluation.cell_runs import FeatureTable
from medfoundry.evaluation.features import extract_features
from medfoundry.evaluation.level_choice import extracted_levels, fit_probe_choosing_levels
from medfoundry.evaluation.probes import probe_accumulator
from medfoundry.recipes.evaluate.config import load_study_config
from medfoundry.recipes.evaluate.plan import plan_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

STUDY = Path(__file__).resolve().parents[1] / "src" / "medfoundry" / "recipes" / "demo" / "demo_study.yaml"
TASKS = ["heldout_brain_region", "heldout_nuclei_count", "heldout_vesicle_membrane"]
FRACTIONS = (0.01, 0.05, 0.1, 0.25, 1.0)
SHOTS = (1, 5, 10)
METRIC = "balanced_accuracy"
MAX_DEALS = 200
RESAMPLES = 1000


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    name, source = args.encoder.split("=", 1)
    cfg = load_study_config(
        STUDY,
        [
            f"tasks={args.corpus.resolve() / 'heldout_tasks.yaml'}",
            f"encoders.0.name={name}",
            f"encoders.0.source={source}",
            f"study_dir={args.corpus.resolve().parent / 'block_cv_study'}",  # not written to
            f"task_names=[{','.join(args.tasks)}]",
            "modes=[linear]",
        ],
    )
    plan = plan_study(cfg, device="cpu")
    encoders = [e for e in (name, "released", "random", "pixels") if e in plan.encoders]
    test = _test_differences(args.test_paired) if args.test_paired else {}
    rows = []
    for task_name, data in plan.data.items():
        pool = [*data.splits["train"], *data.splits["val"]]  # the test split is never read
        folds, blocks = _deal_folds(pool, args.folds, args.max_shots, args.fold_seed)
        n_study = len(data.splits["train"])
        scores = {e: _out_of_fold(plan, task_name, e, pool, folds, args.seeds, n_study) for e in encoders}
        rows += _task_rows(plan.tasks[task_name], pool, blocks, scores, test)
        print(f"{task_name}: {len(pool)} images in {len(set(blocks))} blocks, {args.folds} folds", flush=True)
    path = write_results(args.results_name, rows, torch.device("cpu"), "fp32")
    print_table(rows)
    print(f"wrote {path}")


def _deal_folds(pool: list[Record], k: int, max_shots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each record's fold and block index: whole blocks dealt into folds (``group_folds``), the first deal
    that shows every class in every fold and ``max_shots`` of each in every training pool."""
    names = sorted({r.group or r.key for r in pool})
    block = np.array([names.index(r.group or r.key) for r in pool])
    labels = np.array([r.label for r in pool])
    classes = np.unique(labels)
    for attempt in range(MAX_DEALS):
        folds = group_folds(pool, k, seed=[seed, attempt])
        shown = all(np.isin(classes, labels[folds == f]).all() for f in range(k))
        pools = [labels[(folds != f) & (folds != (f + 1) % k)] for f in range(k)]
        if shown and all(
            (np.bincount(p, minlength=classes.max() + 1)[classes] >= max_shots).all() for p in pools
        ):
            return folds, block
    raise SystemExit(f"no deal of {len(names)} blocks into {k} folds shows every class in every fold")


def _out_of_fold(
    plan: Any,
    task_name: str,
    encoder_name: str,
    pool: list[Record],
    folds: np.ndarray,
    seeds: int,
    n_study: int,
) -> dict[tuple[str, int], np.ndarray]:
    """Cell and seed -> ``(N, C)`` probabilities of every pooled record, each from the fold
    where it was held out."""
    encoder, task, probe_cfg = plan.encoders[encoder_name], plan.tasks[task_name], plan.cfg.probe
    levels, columns = extracted_levels(
        encoder,
        feature_levels=probe_cfg.feature_levels,
        feature_level_choices=probe_cfg.feature_level_choices,
    )
    prep = plan.data[task_name].spec.preprocessing
    features = extract_features(encoder, pool, preprocessing=prep, feature_levels=levels)
    columns = columns or {"all": np.arange(features.shape[1])}
    table = FeatureTable.build(features, pool)
    k = int(folds.max()) + 1
    out: dict[tuple[str, int], np.ndarray] = {}
    for fold in range(k):
        scored = [pool[i] for i in np.flatnonzero(folds == fold)]
        val = table.labelled([pool[i] for i in np.flatnonzero(folds == (fold + 1) % k)])
        train = [pool[i] for i in np.flatnonzero((folds != fold) & (folds != (fold + 1) % k))]
        for cell, seed, subset in _subsets(train, seeds, n_study):
            probe = fit_probe_choosing_levels("linear", task, table.labelled(subset), val, probe_cfg, columns)
            probabilities = probe.predict(table.labelled(scored).features)
            target = out.setdefault((cell, seed), np.zeros((len(pool), probabilities.shape[1])))
            target[folds == fold] = probabilities
    return out


def _subsets(train: list[Record], seeds: int, n_study: int) -> list[tuple[str, int, list[Record]]]:
    """The study's cells on this training pool: nested fractions (one fit at 100 %) and k-shot
    episodes. A fraction takes as many labels as it takes of the study's training split
    (``n_study`` images), at most the whole pool: 1 % is the same number of labels here and there."""
    labels = [int(r.label) for r in train]
    cells = [
        (f"{f:g}", s, NestedFractions(train, s, keep_groups=False).subset(min(1.0, f * n_study / len(train))))
        for f in FRACTIONS
        for s in range(1 if f == 1.0 else seeds)
    ]
    cells += [
        (f"{n}-shot", e, [train[i] for i in few_shot_indices(labels, n, e)])
        for n in SHOTS
        for e in range(seeds)
    ]
    return cells


def _task_rows(
    task: Any,
    pool: list[Record],
    blocks: np.ndarray,
    scores: dict[str, dict[tuple[str, int], np.ndarray]],
    test: dict[tuple[str, str, str], float],
) -> list[dict[str, Any]]:
    """Per encoder and cell: mean cross-validated score, and minus random weights with its block
    interval (the study's bootstrap, ``Resampler``, drawing blocks; the same resamples for all)."""
    targets = np.array([r.label for r in pool])
    resampler = Resampler(RESAMPLES)

    def scored(probabilities: np.ndarray) -> tuple[float, np.ndarray]:
        accumulator = probe_accumulator(task, probabilities, targets)
        items = accumulator.items()
        resampled = resampler.scores(task.metrics(), items, n=len(pool), name=task.spec.name, groups=blocks)
        return float(accumulator.compute()[METRIC]), resampled[METRIC]

    means = {}  # (encoder, cell) -> mean over seeds of the score and of its resamples
    for encoder, by_cell in scores.items():
        for cell in dict.fromkeys(c for c, _ in by_cell):
            seeded = [scored(by_cell[(cell, s)]) for s in sorted(s for c, s in by_cell if c == cell)]
            means[(encoder, cell)] = (
                np.mean([p for p, _ in seeded]),
                np.mean([r for _, r in seeded], axis=0),
            )
    rows = []
    for (encoder, cell), (point, resampled) in means.items():
        row: dict[str, Any] = {
            "task": task.spec.name,
            "encoder": encoder,
            "cell": cell,
            "cv_score": round(float(point), 4),
            **dict.fromkeys(("minus_random", "ci95_low", "ci95_high", "test_minus_random"), ""),
        }
        if encoder != "random":
            ref_point, ref_resampled = means[("random", cell)]
            low, high = percentile_interval(resampled - ref_resampled, (-1.0, 1.0))
            row |= {
                "minus_random": round(float(point - ref_point), 4),
                "ci95_low": round(low, 4),
                "ci95_high": round(high, 4),
                "test_minus_random": test.get((encoder, task.spec.name, cell), ""),
            }
        rows.append(row)
    return rows


def _test_differences(path: Path) -> dict[tuple[str, str, str], float]:
    """(encoder, task, cell) -> the test split's paired difference from random weights."""
    out = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["reference"] == "random" and row["test_center"] == "all":
                cell = f"{row['shots']}-shot" if row["shots"] else f"{float(row['fraction']):g}"
                out[(row["encoder"], row["task"], cell)] = round(float(row["difference"]), 4)
    return out


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a built corpus folder")
    parser.add_argument("--encoder", required=True, help="pretrained=CHECKPOINT: the encoder to compare")
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold-seed", type=int, default=0, help="seeds the deal of blocks into folds")
    parser.add_argument("--max-shots", type=int, default=max(SHOTS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per fraction, episodes per shot count")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--test-paired", type=Path, help="a study's paired.csv: its test differences, shown beside"
    )
    parser.add_argument("--results-name", default="block_cv", help="names the results files")
    return parser.parse_args()


if __name__ == "__main__":
    main()

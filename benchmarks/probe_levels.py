"""Benchmark: do probe levels chosen per cell on validation score better than one fixed set?

``probe.feature_level_choices`` lets each study cell fit its probe on several candidate sets of
pooled pyramid levels and keep the one with the lowest validation log-loss. Whether that choice
generalises is measured here without reading a test split: each held-out task's VALIDATION split
is cut in two halves (seeded), the choice is made on half A and the chosen probe is scored on
half B, against the demo's former fixed set ``[-3, -2, -1]`` scored on the same half B. Training
subsets are the study's (nested stratified fractions, k-shot episodes), the probe is the demo
study's (class-balanced logistic regression, ``C`` chosen on half A), the encoders are those the
demo compares (its own pretrained run, the released encoder, the same network with random
weights).

Run (after ``medfoundry demo``, which leaves the corpus and its encoder in ``runs/demo``)::

    python benchmarks/probe_levels.py --corpus runs/demo/corpus \\
        --encoder pretrained=runs/demo/pretrain/checkpoints/last

Writes ``benchmarks/results/<results-name>-cpu<t>t-fp32-torch<ver>.csv`` (``--results-name``,
default ``probe_levels``; one row per task, encoder, cell and seed: the fixed set's and the
chosen set's balanced accuracy on half B and the set chosen) with its JSON sidecar, and prints
the means per task, encoder and cell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import torch

from medfoundry.evaluation.cell_runs import FeatureTable
from medfoundry.evaluation.features import extract_features
from medfoundry.evaluation.level_choice import extracted_levels, fit_probe_choosing_levels, level_name
from medfoundry.evaluation.probes import probe_metrics
from medfoundry.recipes.evaluate.config import load_study_config
from medfoundry.recipes.evaluate.plan import plan_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

STUDY = Path(__file__).resolve().parents[1] / "src" / "medfoundry" / "recipes" / "demo" / "demo_study.yaml"
TASKS = ["heldout_brain_region", "heldout_nuclei_count", "heldout_vesicle_membrane"]
FIXED = [-3, -2, -1]
METRIC = "balanced_accuracy"


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    cfg = load_study_config(
        STUDY,
        [
            f"tasks={args.corpus.resolve() / 'heldout_tasks.yaml'}",
            f"encoders.0.source={args.encoder.split('=', 1)[1]}",
            f"study_dir={args.corpus.resolve().parent / 'probe_levels_study'}",  # not written to
            f"task_names=[{','.join(TASKS)}]",
            "modes=[linear]",
        ],
    )
    plan = plan_study(cfg, device="cpu")
    choices = [FIXED, *[c for c in cfg.probe.feature_level_choices if c != FIXED]]
    rows = []
    for task_name, data in plan.data.items():
        for encoder_name in ("pretrained", "released", "random"):
            rows += _task_rows(plan, task_name, data, encoder_name, choices, args.seeds, args.half_seed)
    path = write_results(args.results_name, rows, torch.device("cpu"), "fp32")
    print_table(_means(rows))
    print(f"wrote {path}")


def _task_rows(
    plan: Any, task_name: str, data: Any, encoder_name: str, choices: list, seeds: int, half_seed: int
) -> list:
    encoder, task, probe_cfg = plan.encoders[encoder_name], plan.tasks[task_name], plan.cfg.probe
    val = list(data.splits["val"])
    order = np.random.default_rng(half_seed).permutation(len(val))
    half_a = [val[i] for i in order[: len(val) // 2]]
    half_b = [val[i] for i in order[len(val) // 2 :]]
    levels, columns = extracted_levels(encoder, feature_levels=FIXED, feature_level_choices=choices)
    records = [*data.splits["train"], *val]
    prep = data.spec.preprocessing
    features = extract_features(encoder, records, preprocessing=prep, feature_levels=levels)
    table = FeatureTable.build(features, records)
    a, b = table.labelled(half_a), table.labelled(half_b)
    subsets = [(f"{f:g}", s, data.train_subset(f, s)) for f in (0.01, 0.05, 0.1, 1.0) for s in range(seeds)]
    subsets += [(f"{k}-shot", e, data.few_shot_subset(k, e)) for k in (1, 5, 10) for e in range(seeds)]
    only_fixed = {"fixed": columns[level_name(FIXED)]}
    rows = []
    for cell, seed, train in subsets:
        labelled = table.labelled(train)
        fixed = fit_probe_choosing_levels("linear", task, labelled, a, probe_cfg, only_fixed)
        chosen = fit_probe_choosing_levels("linear", task, labelled, a, probe_cfg, columns)
        rows.append(
            {
                "task": task_name,
                "encoder": encoder_name,
                "cell": cell,
                "seed": seed,
                "fixed": probe_metrics(task, fixed.predict(b.features), b.targets)[METRIC],
                "chosen": probe_metrics(task, chosen.predict(b.features), b.targets)[METRIC],
                "chosen_levels": chosen.levels,
            }
        )
    return rows


def _means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["encoder"], row["cell"]), []).append(row)
    return [
        {
            "task": task,
            "encoder": encoder,
            "cell": cell,
            "fixed [-3 -2 -1]": round(mean(r["fixed"] for r in group), 3),
            "chosen": round(mean(r["chosen"] for r in group), 3),
            "gain": round(mean(r["chosen"] - r["fixed"] for r in group), 3),
        }
        for (task, encoder, cell), group in groups.items()
    ]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a built corpus folder")
    parser.add_argument("--encoder", required=True, help="pretrained=CHECKPOINT: the demo's own encoder")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per fraction, episodes per shot count")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--half-seed", type=int, default=0, help="seeds the cut into halves A and B")
    parser.add_argument(
        "--results-name", default="probe_levels", help="names the results files (one name per encoder)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()

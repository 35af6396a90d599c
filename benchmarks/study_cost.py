"""Cost of one probe sweep (6 fractions x 3 seeds x linear probe + kNN) against one feature-extraction pass.

Both run on the same real images: the demo database's ``modality`` task (crops of packaged
fundus, immunohistochemistry, phase-contrast, H&E and fluorescence images), enlarged with
``--crops-per-class``. The sweep is what a study runs per (encoder, task) once the features
exist, the same ``run_probe_cell`` calls: draw each nested subset, fit the logistic regression
over its C grid with C chosen on validation, build the kNN index, predict and score the test
set. The extraction pass is what a study runs once per (encoder, task): decode, resize and
embed every image of the task. The two alternate within one process; the table reports the
median of each.

    python benchmarks/study_cost.py                         # CPU, resnet18 at 224 px (the papers' size)
    python benchmarks/study_cost.py --image-sizes 224 64    # and at the demo's size (~12x cheaper pass)
    python benchmarks/study_cost.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import medfoundry
from medfoundry.demo import build_demo_database
from medfoundry.evaluation import ProbeConfig, extract_features
from medfoundry.evaluation.cell_runs import FeatureTable, run_probe_cell
from medfoundry.evaluation.study_cells import Cell
from medfoundry.evaluation.study_data import TaskData, load_task_data
from medfoundry.recipes.evaluate_config import DEFAULT_FRACTIONS
from medfoundry.tasks import TaskSpec, build_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

TARGET = 0.25
SEEDS = (0, 1, 2)


def probe_sweep(data: TaskData, features: np.ndarray, cfg: ProbeConfig) -> tuple[float, float]:
    """Seconds spent on the linear-probe cells and on the kNN cells of every fraction and seed."""
    table = FeatureTable.build(features, data.records)
    seconds = {"linear": 0.0, "knn": 0.0}
    for fraction in DEFAULT_FRACTIONS:
        for seed in SEEDS:
            for mode in seconds:
                start = time.perf_counter()
                run_probe_cell(Cell("encoder", data.spec.name, mode, fraction, seed), data, table, cfg)
                seconds[mode] += time.perf_counter() - start
    return seconds["linear"], seconds["knn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[224])
    parser.add_argument("--crops-per-class", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks_file = build_demo_database(Path(tmp), crops_per_class=args.crops_per_class)
        spec = TaskSpec(
            name="modality",
            type="classification",
            classes=["fundus", "immunohistochemistry", "phase_contrast", "h_and_e", "fluorescence"],
            source={"path": tasks_file.parent / "modality.csv"},
        )
        data = load_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.2)
        for image_size in args.image_sizes:
            rows.append(measure(data, args.encoder, image_size, args.batch_size, args.repeats, device))
    print_table(rows)
    print(f"wrote {write_results('study_cost', rows, device, 'fp32')}")


def measure(
    data: TaskData, encoder_name: str, image_size: int, batch_size: int, repeats: int, device: torch.device
) -> dict[str, object]:
    """Median seconds of extraction and sweep, alternating ``repeats`` times."""
    # random weights cost what trained ones do, and need no download
    encoder = medfoundry.load_encoder(encoder_name, pretrained=False, image_size=image_size, device=device)
    cfg = ProbeConfig()
    extraction, linear, knn = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        features = extract_features(encoder, data.records, batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        extraction.append(time.perf_counter() - start)
        linear_s, knn_s = probe_sweep(data, features, cfg)
        linear.append(linear_s)
        knn.append(knn_s)
    extraction_s = statistics.median(extraction)
    sweep_s = statistics.median(a + b for a, b in zip(linear, knn, strict=True))
    return {
        "encoder": encoder_name,
        "image_size": image_size,
        "images": len(data.records),
        "train_at_100": len(data.splits["train"]),
        "feature_dim": features.shape[1],
        "cells": len(DEFAULT_FRACTIONS) * len(SEEDS) * 2,
        "c_values": len(cfg.c_values),
        "extraction_s": extraction_s,
        "sweep_s": sweep_s,
        "linear_s": statistics.median(linear),
        "knn_s": statistics.median(knn),
        "sweep_over_extraction": sweep_s / extraction_s,
        "target": TARGET,
        "meets_target": sweep_s / extraction_s <= TARGET,
    }


if __name__ == "__main__":
    main()

"""Cost of a study: one probe sweep against one feature-extraction pass, and 2 workers against 1.

``sweep`` (the default): cost of one probe sweep (6 fractions x 3 seeds x linear probe + kNN)
against one feature-extraction pass.

Both run on the same real images: the small corpus's ``heldout_nuclei_count`` task (960 tiles
of napari's 3D fluorescence nuclei, counted in 4 bins, train / val / test by spatial block). The
sweep is what a study runs per (encoder, task) once the features exist, the same
``run_probe_cell`` calls: draw each nested subset, fit the logistic regression over its C grid
with C chosen on validation, build the kNN index, predict and score the test set. The
extraction pass is what a study runs once per (encoder, task): decode, resize and embed every
image of the task. The two alternate within one process; the table reports the
median of each.

    python benchmarks/study_cost.py                         # CPU, resnet18 at 224 px (the papers' size)
    python benchmarks/study_cost.py --image-sizes 224 64    # and at the demo's size (~12x cheaper pass)
    python benchmarks/study_cost.py --device cuda

``workers``: a whole study (``medfoundry.recipes.evaluate.job.run``) with ``--workers 2`` against
``--workers 1``, one torch thread per worker, on the same real images: two random-weight CNNs
and the raw-pixel baseline, linear probe, kNN and fine-tuning, 4 fractions x 2 seeds. Both runs
start from an empty study folder in the same process invocation, one after the other, so the
ratio is measured under the same load; results must be identical cell for cell.

    python benchmarks/study_cost.py --question workers      # target: >= 1.6x on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import medfoundry
from medfoundry.corpus.labels.counts import COUNT_BINS
from medfoundry.corpus.selections import build_selection
from medfoundry.evaluation import ProbeConfig, extract_features
from medfoundry.evaluation.cell_runs import FeatureTable, run_probe_cell
from medfoundry.evaluation.study_cells import Cell
from medfoundry.evaluation.study_data import StudyTaskData, load_study_task_data
from medfoundry.recipes.evaluate.config import DEFAULT_FRACTIONS
from medfoundry.tasks import TaskSpec, build_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

TARGET = 0.25
SEEDS = (0, 1, 2)
WORKERS_TARGET = 1.6
TASK = "heldout_nuclei_count"


def _nuclei_corpus(folder: Path) -> Path:
    """The small corpus with its held-out nuclei specimen (and stardist: a corpus needs a
    pretraining source); returns its folder."""
    return build_selection(folder, "small", sources=("stardist", "napari_nuclei")).root


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def probe_sweep(data: StudyTaskData, features: np.ndarray, cfg: ProbeConfig) -> tuple[float, float]:
    """Seconds spent on the linear-probe cells and on the kNN cells of every fraction and seed."""
    table = FeatureTable.build(features, data.records)
    seconds = {"linear": 0.0, "knn": 0.0}
    for fraction in DEFAULT_FRACTIONS:
        for seed in SEEDS:
            for mode in seconds:
                start = time.perf_counter()
                run_probe_cell(Cell("encoder", data.spec.name, mode, fraction, seed), data, table, cfg=cfg)
                seconds[mode] += time.perf_counter() - start
    return seconds["linear"], seconds["knn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[224])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--question", choices=["sweep", "workers"], default="sweep")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.question == "workers":
        workers_speedup(device)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = _nuclei_corpus(Path(tmp))
        spec = TaskSpec(
            name=TASK,
            type="classification",
            classes=list(COUNT_BINS),
            source={"path": corpus / f"{TASK}.csv"},
        )
        data = load_study_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.2)
        for image_size in args.image_sizes:
            rows.append(measure(data, args.encoder, image_size, args.batch_size, args.repeats, device))
    print_table(rows)
    print(f"wrote {write_results('study_cost', rows, device, 'fp32')}")


def measure(
    data: StudyTaskData,
    encoder_name: str,
    image_size: int,
    batch_size: int,
    repeats: int,
    device: torch.device,
) -> dict[str, object]:
    """Median seconds of extraction and sweep, alternating ``repeats`` times."""
    # random weights cost what trained ones do, and need no download
    encoder = medfoundry.load_encoder(encoder_name, pretrained=False, image_size=image_size, device=device)
    cfg = ProbeConfig()
    extraction, linear, knn = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        features = extract_features(encoder, data.records, batch_size=batch_size)
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


def workers_speedup(device: torch.device) -> None:
    """Wall and CPU time of the same study with 1 and with 2 workers (one thread each), same results.

    The CPU times come from ``getrusage`` (this process, and the worker process once joined): on a
    machine shared with other jobs the wall-clock ratio depends on their load, while the CPU time
    of each worker shows how evenly the cells were split and what the second worker costs.
    """
    import json
    import resource

    import yaml

    from medfoundry.evaluation.study_cells import read_results
    from medfoundry.recipes import evaluate
    from medfoundry.recipes.evaluate.config import load_study_config

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = _nuclei_corpus(root / "data")
        study = {
            "tasks": str(corpus / "heldout_tasks.yaml"),
            "task_names": [TASK],
            "image_size": 64,
            "encoders": [
                {"name": "resnet18", "source": "resnet18", "pretrained": False},
                {"name": "resnet10t", "source": "resnet10t", "pretrained": False},
            ],
            "baselines": ["pixels"],
            "modes": ["linear", "knn", "finetune"],
            "fractions": [0.1, 0.25, 0.5, 1.0],
            "seeds": 2,
            "finetune": {
                "epochs": 1,
                "min_steps": 10,
                "max_steps": 40,
                "eval_every_steps": 10,
                "batch_size": 32,
            },
            "threads_per_worker": 1,
            "progress": False,
            "device": device.type,
        }
        results = {}
        for workers in (1, 2):
            path = root / f"study_w{workers}.yaml"
            folder = root / f"w{workers}"
            path.write_text(yaml.safe_dump({**study, "study_dir": str(folder), "workers": workers}))
            cfg = load_study_config(path)
            load_before = os.getloadavg()[0]
            self_before = resource.getrusage(resource.RUSAGE_SELF)
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            evaluate.run(cfg)
            wall = time.perf_counter() - start
            own = _cpu(resource.getrusage(resource.RUSAGE_SELF)) - _cpu(self_before)
            other = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - _cpu(children_before)
            results[workers] = read_results(folder / "results.csv")
            ran_here = sum(
                json.loads(p.read_text())["worker"]["pid"] == os.getpid()
                for p in (folder / "cells").glob("*.json")
            )
            cells = len(list((folder / "cells").glob("*.json")))
            rows.append(
                {
                    "workers": workers,
                    "threads_per_worker": 1,
                    "images": len(read_rows(corpus / f"{TASK}.csv")),
                    "cells": cells,
                    "cells_by_worker": f"{ran_here}+{cells - ran_here}" if workers == 2 else str(cells),
                    "wall_s": wall,
                    "cpu_main_s": own,
                    "cpu_second_worker_s": other,
                    "load_before": load_before,
                    "load_after": os.getloadavg()[0],
                }
            )
        identical = _same(results[1], results[2])
    one, two = rows
    for row in rows:
        row["wall_speedup"] = one["wall_s"] / row["wall_s"]
        # each worker on a core of its own: the busier worker's CPU time bounds the wall time
        row["cpu_bound_speedup"] = (one["cpu_main_s"] + one["cpu_second_worker_s"]) / max(
            row["cpu_main_s"], row["cpu_second_worker_s"]
        )
        row["identical_results"] = identical
        row["target"] = WORKERS_TARGET
    two["meets_target"] = identical and two["wall_speedup"] >= WORKERS_TARGET
    one["meets_target"] = ""
    print_table(rows)
    print(f"wrote {write_results('study_workers', rows, device, 'fp32')}")


def _cpu(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal rows (NaN equal to NaN)."""

    def equal(x: Any, y: Any) -> bool:
        return bool(
            x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        )

    return len(a) == len(b) and all(
        r.keys() == s.keys() and all(equal(r[k], s[k]) for k in r) for r, s in zip(a, b, strict=True)
    )


if __name__ == "__main__":
    main()

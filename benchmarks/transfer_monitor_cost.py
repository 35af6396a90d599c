"""Cost of the transfer monitor: one evaluation against the training steps between two of them.

Runs the demo's pretraining recipe (``src/medfoundry/recipes/demo/demo_pretrain.yaml``: ResNet-18 with
GroupNorm at 64 px, the corpus's 11 labelled tasks x batch 16 per step) for a few steps with
``training.transfer_monitor`` on the demo's in-domain held-out tasks (``heldout_brain_region``,
``heldout_nuclei_count``) at ``max_images`` 1000, linear probe and kNN, the demo study's pooled
levels ([-3, -2, -1]). The run's own logs give the numbers: ``metrics.jsonl`` has each
evaluation's seconds (kind ``transfer``) and, logged every step, the training images/s (training
time only: validation, the monitor and checkpoints excluded). Setup, decoding the held-out images
into memory once per run, is timed on its own in this process.

    python benchmarks/transfer_monitor_cost.py runs/corpus          # a folder `medfoundry corpus` wrote
    python benchmarks/transfer_monitor_cost.py runs/corpus --steps 30 --device cuda

The share of a run is computed for the demo recipe's 100 steps with ``every_steps`` (default
100): evaluations at step 0, every ``every_steps`` and the last step, plus the setup once.
Target: at most 10 % of the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import medfoundry
from medfoundry.evaluation.transfer_monitor import load_transfer_monitor
from medfoundry.recipes.demo import demo_config, labelled_tasks
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.training.metrics_log import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

TARGET = 0.10
TASKS = ("heldout_brain_region", "heldout_nuclei_count")
DEMO_STEPS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="a folder written by `medfoundry corpus`")
    parser.add_argument("--steps", type=int, default=20, help="training steps of the measured run")
    parser.add_argument("--monitor-every", type=int, default=10, help="every_steps of the measured run")
    parser.add_argument("--every-steps", type=int, default=100, help="every_steps the share is computed for")
    parser.add_argument("--max-images", type=int, default=1000)
    parser.add_argument("--feature-levels", type=int, nargs="+", default=[-3, -2, -1])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    corpus = args.corpus.resolve()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        monitor = [
            f"training.transfer_monitor.tasks={corpus / 'heldout_tasks.yaml'}",
            f"training.transfer_monitor.task_names=[{','.join(TASKS)}]",
            f"training.transfer_monitor.every_steps={args.monitor_every}",
            f"training.transfer_monitor.max_images={args.max_images}",
            f"training.transfer_monitor.probe.feature_levels=[{','.join(map(str, args.feature_levels))}]",
        ]
        cfg = load_pretrain_config(
            demo_config("demo_pretrain.yaml"),
            [
                f"run_dir={Path(tmp) / 'run'}",
                f"tasks={labelled_tasks(corpus, Path(tmp) / 'pretrain_tasks.yaml')}",
                f"training.max_steps={args.steps}",
                "training.log_every_steps=1",
                f"training.checkpoint_every_steps={args.steps}",
                f"training.preview_every_steps={args.steps}",
                f"training.device={args.device}",
                "enable_progress=false",
                *monitor,
            ],
        )
        assert cfg.training.transfer_monitor is not None
        started = time.perf_counter()
        held_out = load_transfer_monitor(cfg.training.transfer_monitor, image_size=cfg.model.image_size)
        setup_s = time.perf_counter() - started
        images = {n: (len(t.train.records), len(t.val.records)) for n, t in held_out.tasks.items()}
        del held_out
        run_dir = medfoundry.pretrain(cfg)
        records = read_metrics(run_dir / "metrics.jsonl")
    per_step = cfg.data.batch_size * len(cfg.tasks)
    step_s = [per_step / r["images_per_s"] for r in records if r["kind"] == "train"]
    evaluations = [(r["step"], r["seconds"]) for r in records if r["kind"] == "transfer"]
    rows = [summary(args, step_s, evaluations, setup_s, images, load_before)]
    print("evaluations (step, s):", ", ".join(f"{s}: {t:.2f}" for s, t in evaluations))
    print_table(rows)
    path = write_results("transfer_monitor_cost", rows, torch.device(args.device), "fp32")
    sidecar = path.with_suffix(".json")
    details = json.loads(sidecar.read_text())
    details["result"] = {**rows[0], "evaluations": evaluations, "step_seconds": step_s}
    sidecar.write_text(json.dumps(details, indent=2))
    print(f"wrote {path} and {sidecar}")


def summary(
    args: argparse.Namespace,
    step_s: list[float],
    evaluations: list[tuple[int, float]],
    setup_s: float,
    images: dict[str, tuple[int, int]],
    load_before: tuple[float, float, float],
) -> dict[str, object]:
    """One row: median costs, and the monitor's share of a demo run at ``args.every_steps``."""
    evaluation_s = statistics.median(t for _, t in evaluations)
    median_step_s = statistics.median(step_s)
    interval_s = args.every_steps * median_step_s
    scores = 1 + math.ceil(DEMO_STEPS / args.every_steps)  # step 0, every N, the last step
    monitor_s = setup_s + scores * evaluation_s
    share = monitor_s / (DEMO_STEPS * median_step_s + monitor_s)
    return {
        "tasks": "+".join(f"{n.removeprefix('heldout_')}({a}/{b})" for n, (a, b) in images.items()),
        "levels": " ".join(map(str, args.feature_levels)),
        "setup_s": setup_s,
        "evaluation_s": evaluation_s,
        "step_s": median_step_s,
        "every_steps": args.every_steps,
        "evaluation_per_interval": evaluation_s / (interval_s + evaluation_s),
        "demo_run_share": share,
        "target": "met" if share <= TARGET else "missed",
        "load_before": round(load_before[0], 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()

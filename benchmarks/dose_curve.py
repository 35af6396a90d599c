"""Benchmark: transfer against pretraining dose, scored by the transfer monitor on VALIDATION splits.

Which recipe, and how many passes over the corpus, make an encoder whose frozen features beat
random weights on held-out tasks? Each pretraining run is given as ``NAME=FOLDER``, a folder of
``step_<N>`` checkpoint folders (the run's weights copied along the way). Every snapshot, and the
same architecture with random weights, is scored by the transfer monitor
(``medfoundry.evaluation.transfer_monitor``): the held-out tasks' study splits, at most
``--max-images`` training and validation images per task, a class-balanced linear probe and a
kNN on the pooled pyramid levels of the demo study (``[-3, -2, -1]``), each task's primary metric
on its VALIDATION split. The last snapshot of each run and random weights are also probed on each
pyramid level alone (per-stage probes): where pretraining helps or hurts. The test splits, which
studies report on, are never read.

Run (the runs' snapshots made with ``--set training.checkpoint_every_steps=150`` and a copy of
``checkpoints/last`` after each save)::

    python benchmarks/dose_curve.py --corpus runs/corpus \\
        --run labelled=runs/labelled1200.snapshots --run views=runs/views1200.snapshots \\
        --seconds-per-step labelled=1.53 views=1.86 --images-per-step 176 --pretraining-images 6214

Writes ``benchmarks/results/dose_curve-cpu<t>t-fp32-torch<ver>.csv`` (one row per run, step,
levels, task and probe) with its JSON sidecar, and ``docs/images/dose_curve.png`` (mean score
against passes over the corpus and against CPU hours, random weights as a line).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from medfoundry.evaluation.pretrained_encoder import load_encoder
from medfoundry.evaluation.probes import ProbeConfig
from medfoundry.evaluation.transfer_monitor import (
    TransferMonitor,
    TransferMonitorConfig,
    load_transfer_monitor,
)
from medfoundry.tasks import load_task_database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_results  # noqa: E402

TASKS = ["heldout_brain_region", "heldout_nuclei_count", "heldout_vesicle_membrane"]
DEMO_LEVELS = [-3, -2, -1]
PLOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "dose_curve.png"


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    database = load_task_database(args.corpus / "heldout_tasks.yaml")
    runs = dict(_pair(text) for text in args.run)
    logged = {name: Path(folder) for name, folder in (_pair(t) for t in args.monitor_log)}
    seconds = {name: float(value) for name, value in (_pair(t) for t in args.seconds_per_step)}
    snapshots = {name: _snapshots(Path(folder)) for name, folder in runs.items()}
    for name, run_dir in logged.items():  # its last checkpoint gets the per-stage probes
        snapshots[name] = [(_last_step(run_dir), run_dir / "checkpoints" / "last")]
    if not snapshots:
        raise SystemExit("give at least one --run or --monitor-log")
    first = next(iter(snapshots.values()))[0][1]
    encoder = load_encoder(first)
    levels = encoder.num_levels
    monitors = {
        str(levels_): _monitor(database, args, list(levels_), encoder.image_size)
        for levels_ in [DEMO_LEVELS, *([i] for i in range(levels))]
    }
    rows: list[dict[str, Any]] = []
    for name, run_dir in logged.items():
        rows += _logged_rows(name, run_dir, args, seconds.get(name, float("nan")))
    random = load_encoder(first, pretrained=False, seed=0)
    for key, monitor in monitors.items():
        rows += _rows("random", 0, key, monitor, random.encoder, passes=0.0, hours=0.0)
    for name, steps in snapshots.items():
        for i, (step, folder) in enumerate(steps):
            passes = step * args.images_per_step / args.pretraining_images
            hours = step * seconds.get(name, float("nan")) / 3600
            keys = monitors if i == len(steps) - 1 else [str(DEMO_LEVELS)]
            trained = load_encoder(folder).encoder
            for key in keys:
                rows += _rows(name, step, key, monitors[key], trained, passes=passes, hours=hours)
            print(f"{name} step {step}: done", flush=True)
    name = "dose_curve" + (f"-{args.tag}" if args.tag else "")
    path = write_results(name, rows, torch.device("cpu"), "fp32")
    for earlier in args.include:  # runs scored before: in the table and the plot, not scored again
        rows += [r for r in _read_rows(earlier) if r["run"] != "random"]
    print(_table(rows))
    print(f"wrote {path}")
    _plot(rows, PLOT)
    print(f"wrote {PLOT}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--run", action="append", default=[], help="NAME=FOLDER of step_<N> checkpoints")
    parser.add_argument(
        "--monitor-log",
        action="append",
        default=[],
        help="NAME=RUN_DIR of a run whose own transfer monitor probed the demo's levels: its "
        "metrics.jsonl gives the curve, its checkpoints/last the per-stage probes",
    )
    parser.add_argument("--include", action="append", default=[], type=Path, help="an earlier results CSV")
    parser.add_argument("--tag", default="", help="appended to the results file's name")
    parser.add_argument("--seconds-per-step", nargs="*", default=[], help="NAME=SECONDS measured alone")
    parser.add_argument("--images-per-step", type=int, default=176, help="labelled images per step")
    parser.add_argument("--pretraining-images", type=int, default=6214)
    parser.add_argument("--max-images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def _pair(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if not value:
        raise SystemExit(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _snapshots(folder: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"step_(\d+)", p.name))]
    if not found:
        raise SystemExit(f"{folder}: no step_<N> checkpoint folders")
    return sorted(found)


def _last_step(run_dir: Path) -> int:
    return max(int(r["step"]) for r in _metrics(run_dir) if r["kind"] == "transfer")


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def _logged_rows(name: str, run_dir: Path, args: argparse.Namespace, seconds: float) -> list[dict[str, Any]]:
    """The run's own monitor scores, as rows of this script (refused unless its monitor probed
    the same tasks, levels and image count as this script does)."""
    monitor = yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["transfer_monitor"]
    levels = monitor.get("probe", {}).get("feature_levels", [-1])
    if levels != DEMO_LEVELS or monitor.get("max_images", 1000) != args.max_images:
        raise SystemExit(f"{run_dir}: its monitor probed levels {levels}, not {DEMO_LEVELS}")
    rows = []
    for entry in (e for e in _metrics(run_dir) if e["kind"] == "transfer"):
        step = int(entry["step"])
        passes = step * args.images_per_step / args.pretraining_images
        rows += [
            {"run": name, "step": step, "passes": round(passes, 2),
             "cpu_hours": round(step * seconds / 3600, 3), "levels": str(DEMO_LEVELS), "task": task,
             "probe": probe, "score": entry[f"{task}/{probe}"], "seconds": round(entry["seconds"], 1)}
            for task in TASKS
            for probe in ("linear", "knn")
        ]  # fmt: skip
    return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as f:
        return [
            {**r, "step": int(r["step"]), "passes": float(r["passes"]), "cpu_hours": float(r["cpu_hours"]),
             "score": float(r["score"])}
            for r in csv.DictReader(f)
        ]  # fmt: skip


def _monitor(database: list[Any], args: argparse.Namespace, levels: list[int], size: int) -> TransferMonitor:
    cfg = TransferMonitorConfig(
        tasks=database,
        task_names=TASKS,
        max_images=args.max_images,
        probe=ProbeConfig(feature_levels=levels),
    )
    return load_transfer_monitor(cfg, image_size=size)


def _rows(
    name: str,
    step: int,
    levels: str,
    monitor: TransferMonitor,
    encoder: torch.nn.Module,
    *,
    passes: float,
    hours: float,
) -> list[dict[str, Any]]:
    scores = monitor.score(encoder, device=torch.device("cpu"))
    return [
        {"run": name, "step": step, "passes": round(passes, 2), "cpu_hours": round(hours, 3),
         "levels": levels, "task": task, "probe": probe, "score": value, "seconds": round(scores.seconds, 1)}
        for task, by_probe in scores.scores.items()
        for probe, value in by_probe.items()
    ]  # fmt: skip


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| run | step | passes | levels | "
        + " | ".join(f"{t} {p}" for t in TASKS for p in ("linear", "knn"))
        + " |"
    ]
    lines.append("|" + "---|" * (4 + 2 * len(TASKS)))
    keys = dict.fromkeys((r["run"], r["step"], r["passes"], r["levels"]) for r in rows)
    for run, step, passes, levels in keys:
        values = {(r["task"], r["probe"]): r["score"] for r in rows
                  if (r["run"], r["step"], r["levels"]) == (run, step, levels)}  # fmt: skip
        cells = [f"{values.get((t, p), float('nan')):.3f}" for t in TASKS for p in ("linear", "knn")]
        lines.append(f"| {run} | {step} | {passes} | {levels} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    demo = [r for r in rows if r["levels"] == str(DEMO_LEVELS) and r["probe"] == "linear"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name in dict.fromkeys(r["run"] for r in demo if r["run"] != "random"):
        points = sorted({(r["step"], r["passes"], r["cpu_hours"]) for r in demo if r["run"] == name})
        means = [_mean(demo, name, step) for step, _, _ in points]
        axes[0].plot([p for _, p, _ in points], means, marker="o", label=name)
        axes[1].plot([h for _, _, h in points], means, marker="o", label=name)
    for ax, label in zip(
        axes, ("passes over the corpus's labelled pretraining images", "CPU hours (2 cores)"), strict=True
    ):
        ax.axhline(_mean(demo, "random", 0), color="grey", linestyle="--", label="random weights")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean validation score, linear probe\n(" + ", ".join(TASKS) + ")", fontsize=8)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _mean(rows: list[dict[str, Any]], run: str, step: int) -> float:
    values = [r["score"] for r in rows if r["run"] == run and r["step"] == step]
    return float(sum(values) / len(values))


if __name__ == "__main__":
    main()

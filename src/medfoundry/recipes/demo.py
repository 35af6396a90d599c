"""Recipe: the built-in demo. Builds the packaged-image database, then pretrains on it.

This is the README's main job. It runs offline on a laptop CPU: real fluorescence, fundus,
IHC, phase-contrast and H&E images from installed packages (see ``medfoundry.demo``).
"""

from __future__ import annotations

import json
import math
import shutil
from importlib.resources import files
from pathlib import Path

from rich.console import Console
from rich.table import Table

from medfoundry.demo import build_demo_database
from medfoundry.recipes import pretrain_multitask
from medfoundry.recipes.pretrain_config import load_pretrain_config

__all__ = ["run"]

QUICK_STEPS = 30


def run(out_dir: Path, quick: bool = False) -> Path:
    """Build ``out_dir/data``, pretrain into ``out_dir/pretrain``; returns the run folder.

    A previous demo run in ``out_dir/pretrain`` is replaced.
    """
    console = Console()
    tasks_file = build_demo_database(Path(out_dir) / "data")
    console.print(f"demo database: {tasks_file}")
    run_dir = Path(out_dir) / "pretrain"
    overrides = [f"run_dir={run_dir}", f"tasks={tasks_file.resolve()}"]
    if quick:
        overrides.append(f"training.max_steps={QUICK_STEPS}")
    config = files("medfoundry.demo").joinpath("demo_pretrain.yaml")
    cfg = load_pretrain_config(Path(str(config)), overrides)
    if run_dir.exists():
        console.print(f"replacing the previous demo run in {run_dir}")
        shutil.rmtree(run_dir)
    pretrain_multitask.run(cfg)
    _print_summary(console, run_dir)
    return run_dir


def _print_summary(console: Console, run_dir: Path) -> None:
    best = json.loads((run_dir / "checkpoints" / "best" / "config.json").read_text())
    first = _first_validation(run_dir)
    table = Table(title=f"best checkpoint (step {best['training']['step']}): validation per task")
    table.add_column("task")
    table.add_column("loss at first validation", justify="right")
    table.add_column("best-checkpoint loss", justify="right")
    table.add_column("metrics", justify="left")
    for task, result in best["metrics"]["val"].items():
        metrics = ", ".join(
            f"{k} {v:.3f}"
            for k, v in result.items()
            if k != "loss" and "/" not in k and isinstance(v, float) and math.isfinite(v)
        )
        table.add_row(task, f"{first.get(f'{task}/loss', math.nan):.3f}", f"{result['loss']:.3f}", metrics)
    console.print(table)
    console.print(f"checkpoints: {run_dir / 'checkpoints'}; metrics: {run_dir / 'metrics.jsonl'}")


def _first_validation(run_dir: Path) -> dict[str, float]:
    from medfoundry.training.metrics_log import read_metrics

    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "val"]
    return records[0] if records else {}

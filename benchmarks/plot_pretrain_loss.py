"""Plot a pretraining run's loss curves: each task's training loss (the logged window means)
and, where the run validated, the validation loss, against the shared step.

Each task's loss is normalised so that chance is about 1 (docs/architecture.md), so the curves
of all tasks share one axis. Used for docs/demo.md ("Does the demo pretraining converge?").

Run: ``python benchmarks/plot_pretrain_loss.py RUN_DIR --out docs/images/demo_pretrain_loss.png``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logged = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if r.get("kind") == "train"]
    val = [r for r in logged if r.get("kind") == "val"]
    tasks = [k.split("/", 1)[1] for k in train[0] if k.startswith("loss/")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for task in tasks:
        (line,) = left.plot([r["step"] for r in train], [r[f"loss/{task}"] for r in train], label=task)
        points = [(r["step"], r[f"{task}/loss"]) for r in val if f"{task}/loss" in r]
        right.plot(*zip(*points, strict=True), marker="o", color=line.get_color(), label=task)
    left.set(title="training loss (window means)", xlabel="shared step", ylabel="loss (chance ≈ 1)")
    right.set(title="validation loss", xlabel="shared step")
    right.legend(fontsize=7, loc="upper right")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

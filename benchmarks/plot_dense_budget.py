"""Plot dense decoders' validation score against training steps, from ``dense_budget.py``'s curves.

One panel per task (face segmentation: mean Dice; nuclei detection: mAP@50), one line per
encoder and run (a fixed budget, or the defaults with early stopping); a dashed vertical line at
the default step floor (``FinetuneConfig.dense_min_steps``). Read from the VALIDATION split only.
Used for docs/benchmarks.md ("Step budget of dense decoders").

Run: ``python benchmarks/plot_dense_budget.py benchmarks/results/dense_budget_curves-*.csv
--out docs/images/dense_budget.png``; ``--label FILE=TEXT`` names a file's lines in the legend.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

from medfoundry.evaluation.finetune import DENSE_MIN_STEPS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRIC = {"heldout_face_seg": "validation mean Dice", "heldout_nuclei_det": "validation mAP@50"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="+", type=Path, help="dense_budget_curves-*.csv files")
    parser.add_argument("--label", action="append", default=[], help="FILE=TEXT: legend text of a file")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels = dict(item.split("=", 1) for item in args.label)
    lines: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for path in args.curves:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                name = f"{labels.get(path.name, path.stem)}: {row.get('encoder', 'random')}, {row['run']}"
                lines[row["task"]].setdefault(name, []).append((int(row["step"]), float(row["val_score"])))
    fig, axes = plt.subplots(1, len(lines), figsize=(6 * len(lines), 4.2), squeeze=False)
    for axis, (task, curves) in zip(axes[0], sorted(lines.items()), strict=True):
        for name, points in sorted(curves.items()):
            axis.plot(*zip(*sorted(points), strict=True), marker="o", markersize=3, label=name)
        axis.axvline(DENSE_MIN_STEPS, color="grey", linestyle="--", linewidth=1)
        axis.set(title=task, xlabel="training step", ylabel=METRIC.get(task, "validation score"))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

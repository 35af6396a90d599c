"""Recipe: the built-in demo, end to end on real images that ship inside Python packages.

1. Build the demo database (``medfoundry.demo``): microscopy, brain MR, radiology and
   unlabelled histology, every label derived as docs/demo.md says.
2. Pretrain a small encoder with the memory-constant multi-task strategy on three labelled
   tasks (brain tissue, brain plane, DICOM modality) plus masked-image modelling of unlabelled
   histology tiles. The nuclei and technique tasks are held out.
3. Evaluate transfer to the held-out tasks: the pretrained encoder against the same network
   with random weights, frozen, with a decoder (nuclei segmentation and detection) or probes
   (technique classification) trained on 10-100% of the labels, over seeds; write
   results.csv, summary.csv, efficiency.csv and report.html.
4. Print where the report is and its headline numbers, saying plainly where pretraining did not
   help.

It runs offline on a 2-core CPU in about 15 minutes (``--quick``: about 3).
"""

from __future__ import annotations

import csv
import math
import shutil
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

from rich.console import Console

from medfoundry.demo import build_demo_database
from medfoundry.errors import DataError
from medfoundry.evaluation.study_data import ALL
from medfoundry.recipes import evaluate, pretrain_multitask
from medfoundry.recipes.evaluate_config import load_study_config
from medfoundry.recipes.pretrain_config import load_pretrain_config

__all__ = ["run"]

QUICK_PRETRAIN = ["training.max_steps=24", "training.preview_every_steps=24"]
QUICK_STUDY = ["fractions=[0.25,1.0]", "seeds=1", "finetune.max_steps=30", "finetune.eval_every_steps=15"]
DEMO_PACKAGES = ("stardist", "skimage", "nilearn", "deid_data", "mahotas")
NEEDED_FREE_BYTES = 500 * 2**20


def run(out_dir: Path, quick: bool = False) -> Path:
    """Build, pretrain, evaluate; returns the study folder (its ``report.html`` is the result).

    Previous demo output in ``out_dir`` is replaced.

    Raises:
        DataError: demo packages missing (with the install command), or too little disk space.
    """
    out_dir = Path(out_dir)
    _check_ready(out_dir)
    console = Console()
    for old in ("pretrain", "study"):
        if (out_dir / old).exists():
            shutil.rmtree(out_dir / old)

    console.rule("[bold]1/3 demo database from packaged images")
    build_demo_database(out_dir / "data")
    data = (out_dir / "data").resolve()
    console.print(f"written to {data} (how every label was derived: docs/demo.md)")

    console.rule("[bold]2/3 multi-task + masked-image pretraining (nuclei and technique tasks held out)")
    pretrain_cfg = load_pretrain_config(
        _packaged("demo_pretrain.yaml"),
        [
            f"run_dir={out_dir / 'pretrain'}",
            f"tasks={data / 'pretrain_tasks.yaml'}",
            *(QUICK_PRETRAIN if quick else []),
        ],
    )
    run_dir = pretrain_multitask.run(pretrain_cfg)
    best = (run_dir / "checkpoints" / "best").resolve()

    console.rule("[bold]3/3 transfer to the held-out tasks: pretrained vs random init")
    study_cfg = load_study_config(
        _packaged("demo_study.yaml"),
        [
            f"study_dir={out_dir / 'study'}",
            f"tasks={data / 'eval_tasks.yaml'}",
            f"encoders.0.source={best}",
            f"encoders.1.source={best}",
            *(QUICK_STUDY if quick else []),
        ],
    )
    study_dir = evaluate.run(study_cfg)
    _print_headline(console, study_dir)
    return study_dir


def _packaged(name: str) -> Path:
    return Path(str(files("medfoundry.demo").joinpath(name)))


def _check_ready(out_dir: Path) -> None:
    missing = [p for p in DEMO_PACKAGES if find_spec(p) is None]
    if missing:
        raise DataError(
            f"the demo needs the packages {', '.join(missing)}, which are not installed: "
            "pip install 'medfoundry[demo]'  (or: make setup)"
        )
    existing = next(p for p in (out_dir, *out_dir.resolve().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < NEEDED_FREE_BYTES:
        raise DataError(
            f"the demo needs about {NEEDED_FREE_BYTES // 2**20} MB free under {existing}, only "
            f"{free // 2**20} MB are; free some space or choose another --out folder"
        )


def _print_headline(console: Console, study_dir: Path) -> None:
    """Each task's primary score by fraction for both encoders, and what the efficiency table says."""
    summary = _read(study_dir / "summary.csv")
    console.rule("[bold]headline")
    for row in _read(study_dir / "efficiency.csv"):
        if row["encoder"] != "pretrained":
            continue
        task, mode, metric = row["task"], row["mode"], row["metric"]
        curve = [
            r
            for r in summary
            if r["task"] == task and r["mode"] == mode and r["metric"] == metric and r["train_center"] == ALL
        ]
        console.print(f"[bold]{task}[/] ({metric}, {mode}; mean over seeds ± half the 95% CI)")
        for encoder in dict.fromkeys(r["encoder"] for r in curve):
            cells = [
                f"{float(r['fraction']):>4.0%} {float(r['mean']):.3f}±{_half_ci(r):.3f}"
                for r in sorted(curve, key=lambda r: float(r["fraction"]))
                if r["encoder"] == encoder
            ]
            console.print(f"  {encoder:<11} " + "   ".join(cells))
        console.print("  " + _verdict(row, curve))
    console.print(
        f"\nreport: {study_dir / 'report.html'}  (tables: summary.csv, efficiency.csv; raw: results.csv)"
    )


def _half_ci(row: dict[str, str]) -> float:
    low, high = float(row["ci95_low"] or "nan"), float(row["ci95_high"] or "nan")
    return 0.0 if math.isnan(low) else (high - low) / 2  # one seed: no interval


def _verdict(row: dict[str, str], curve: list[dict[str, str]]) -> str:
    needed, full = float(row["fraction_needed"] or "nan"), float(row["full_data_score"] or "nan")
    reference = float(row["reference_score"] or "nan")
    if math.isnan(needed):
        verdict = (
            f"[yellow]pretraining did not help here[/]: at no fraction did the pretrained encoder reach "
            f"{row['reference']} ({reference:.3f}); with all labels it scored {full:.3f}"
        )
    else:
        verdict = (
            f"the pretrained encoder reached {row['reference']} ({reference:.3f}) with {needed:.0%} of "
            f"the labels; with all labels it scored {full:.3f}"
        )
    at_full = {r["encoder"]: r for r in curve if float(r["fraction"]) == 1.0}
    if {"pretrained", "random"} <= set(at_full) and _overlap(at_full["pretrained"], at_full["random"]):
        verdict += "; at 100% the two are within each other's 95% CI: no clear difference"
    return verdict


def _overlap(a: dict[str, str], b: dict[str, str]) -> bool:
    low_a, high_a = float(a["ci95_low"] or "nan"), float(a["ci95_high"] or "nan")
    low_b, high_b = float(b["ci95_low"] or "nan"), float(b["ci95_high"] or "nan")
    if math.isnan(low_a) or math.isnan(low_b):
        return False  # one seed: no interval to compare
    return low_a <= float(b["mean"]) <= high_a or low_b <= float(a["mean"]) <= high_b


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))

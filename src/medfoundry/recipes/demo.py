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
   help (the study adds the raw-pixel baseline to the probe cells).

It runs offline on a 2-core CPU in about 15 minutes (``--quick``: about 3).
"""

from __future__ import annotations

import csv
import math
import shutil
from contextlib import nullcontext
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
from medfoundry.training.progress import ProgressLines

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
    # without a terminal (a log, a pipe, CI) a plain line at least every 30 s, also while the
    # database is written; pretraining and the study add their own lines
    stages = ProgressLines("demo", 3, unit="stages") if not console.is_terminal else None
    with stages or nullcontext():
        _status(stages, 0, "building the demo database")
        console.rule("[bold]1/3 demo database from packaged images")
        build_demo_database(out_dir / "data")
        data = (out_dir / "data").resolve()
        console.print(f"written to {data} (how every label was derived: docs/demo.md)")

        _status(stages, 1, "pretraining")
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

        _status(stages, 2, "evaluating")
        console.rule("[bold]3/3 transfer to the held-out tasks: pretrained vs random init vs raw pixels")
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
        _status(stages, 3, "done")
    _print_headline(console, study_dir)
    return study_dir


def _status(stages: ProgressLines | None, done: int, status: str) -> None:
    if stages is not None:
        stages.update(done, status)


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
    """Each task's primary score by fraction for every encoder, and what the efficiency table says."""
    summary = _read(study_dir / "summary.csv")
    paired = _read(study_dir / "paired.csv")
    console.rule("[bold]headline")
    for row in _read(study_dir / "efficiency.csv"):
        if row["encoder"] != "pretrained":
            continue
        task, mode, metric = row["task"], row["mode"], row["metric"]
        curve = [
            r
            for r in summary
            if (r["task"], r["mode"], r["metric"], r["train_center"], r["shots"])
            == (task, mode, metric, ALL, "")
        ]
        console.print(
            f"[bold]{task}[/] ({metric}, {mode}; mean over seeds [95% test-set bootstrap interval])"
        )
        for encoder in dict.fromkeys(r["encoder"] for r in curve):
            cells = [
                f"{float(r['fraction']):>4.0%} (n={float(r['n_train']):.0f}) {float(r['mean']):.3f} "
                + _interval(r)
                for r in sorted(curve, key=lambda r: float(r["fraction"]))
                if r["encoder"] == encoder
            ]
            console.print(f"  {encoder:<11} " + "   ".join(cells))
        console.print("  " + _verdict(row, paired))
    console.print(
        f"\nreport: {study_dir / 'report.html'}  "
        "(tables: summary.csv, paired.csv, efficiency.csv; raw: results.csv)"
    )


def _interval(row: dict[str, str]) -> str:
    low, high = float(row["test_ci95_low"] or "nan"), float(row["test_ci95_high"] or "nan")
    return "" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"


def _verdict(row: dict[str, str], paired: list[dict[str, str]]) -> str:
    needed, full = float(row["fraction_needed"] or "nan"), float(row["full_data_score"] or "nan")
    reference = float(row["reference_score"] or "nan")
    if math.isnan(needed):
        verdict = (
            f"[yellow]pretraining did not help here[/]: at no fraction was the pretrained encoder shown to "
            f"reach {row['reference']} ({reference:.3f}); with all labels it scored {full:.3f}"
        )
    else:
        verdict = (
            f"the pretrained encoder reached {row['reference']} ({reference:.3f}) with {needed:.0%} of "
            f"the labels (n={float(row['n_train_needed']):.0f}); with all labels it scored {full:.3f}"
        )
    at_full = [
        r
        for r in paired
        if (r["encoder"], r["reference"], r["task"], r["mode"], r["fraction"])
        == ("pretrained", "random", row["task"], row["mode"], "1.0")
    ]
    if at_full and float(at_full[0]["diff_ci95_low"] or "nan") <= 0 <= float(
        at_full[0]["diff_ci95_high"] or "nan"
    ):
        verdict += (
            "; at 100% the paired 95% interval of the difference to random init includes 0: "
            "no clear difference"
        )
    return verdict


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))

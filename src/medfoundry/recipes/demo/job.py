"""Recipe: the built-in demo, end to end on real images that ship inside Python packages.

1. Build the offline corpus (``medfoundry.corpus``; kept and reused while up to date): about
   10,500 images from 20 packaged sources, 11 labelled pretraining tasks and 5 held-out tasks
   (docs/corpus.md says how every label is derived).
2. Pretrain ResNet-18 at 64 px with the memory-constant multi-task strategy on the corpus's
   labelled pretraining tasks (the recipe chosen on the held-out tasks' validation split:
   docs/demo.md).
3. Evaluate transfer to held-out tasks that pretraining never saw: brain-MR zones of
   another head and nuclei counts of another specimen (in-domain), membranes in a cryo-electron
   tomogram (out-of-domain). The pretrained encoder, and the released encoder
   ``medfoundry:resnet18-views`` (the same recipe with a two-view task for about 62 passes),
   against the same network with random weights and against the raw pixels, with a linear
   probe on frozen features from 1 % of the labels and from k labelled samples per class, over
   seeds, with paired test-set bootstrap intervals; and the face of that head, segmented by a
   decoder trained on each frozen encoder (10 % and 100 % of the slices); write results.csv,
   summary.csv, paired.csv, efficiency.csv and report.html.
4. Print per task how each of the two encoders compares at few labels and whether it saved labels.

It runs offline on a 2-core CPU in about 10 minutes (docs/benchmarks.md); ``--quick``, a
selection of the corpus, one held-out task and a few pretraining steps, in about 2.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from contextlib import nullcontext
from importlib.resources import files
from pathlib import Path
from typing import Any

from rich.console import Console

from medfoundry.corpus import SOURCES, build_corpus
from medfoundry.corpus.selections import SELECTIONS, build_selection
from medfoundry.errors import DataError
from medfoundry.evaluation.efficiency_table import saving_sentence
from medfoundry.evaluation.study_data import ALL
from medfoundry.output_folders import claim_output_folder
from medfoundry.recipes import evaluate, pretrain
from medfoundry.recipes.evaluate.config import BASELINES, load_study_config
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.training.progress import ProgressLines

__all__ = ["demo_config", "run"]

HELDOUT_DOMAINS = {
    "heldout_brain_region": "in-domain: brain MR of another head, another label",
    "heldout_nuclei_count": "in-domain: fluorescence nuclei of another specimen, another label",
    "heldout_vesicle_membrane": "out-of-domain: cryo-electron tomography",
    "heldout_face_seg": "in-domain: the face of the other head's MR, segmented",
}
"""The demo's held-out tasks: three classification tasks (linear probe) and one segmentation
task (a decoder trained on the frozen encoder); the corpus's detection task does not fit the
demo's time (docs/demo.md)."""

QUICK = SELECTIONS["quick"]
"""``--quick``: microscopy and a few DICOMs for pretraining, the held-out nuclei specimen."""
QUICK_PRETRAIN = [
    "training.max_steps=16",
    "training.checkpoint_every_steps=16",
    "training.preview_every_steps=16",
]
QUICK_STUDY = [
    "task_names=[heldout_nuclei_count]",
    "modes=[linear]",
    "task_fractions={}",
    "task_seeds={}",
    "fractions=[0.05,1.0]",
    "seeds=2",
    "few_shot.shots=[5]",
    "few_shot.episodes=2",
    "workers=1",  # a second process would take longer to start than this study takes
]
NEEDED_FREE_BYTES = 800 * 2**20
FEW_LABELS = 0.1
"""The headline compares encoders at this share of the labels and below."""
MODE_WORDS = {"linear": "linear probe", "frozen-decoder": "decoder trained on the frozen encoder"}
"""How the headline names the study mode a task is read in."""


def run(out_dir: Path, quick: bool = False) -> Path:
    """Build the corpus, pretrain, evaluate; returns the study folder (its ``report.html`` is
    the result).

    Previous pretraining and study output in ``out_dir`` is replaced; the corpus in
    ``out_dir/corpus`` is kept and rebuilt only when its sources or code changed.

    Raises:
        DataError: a package of the held-out sources missing (with the install command), or too
            little disk space.
        ConfigError: fewer corpus sources installed than the corpus needs.
    """
    out_dir = Path(out_dir).absolute()  # --out is relative to the current folder, not to a config
    _check_ready(out_dir, quick)
    console = Console()
    # only what an earlier demo wrote is started afresh; any other folder is refused untouched
    claim_output_folder(out_dir, "demo", replaces={"pretrain": "pretrain", "study": "evaluate"})
    # without a terminal (a log, a pipe, CI) a plain line at least every 30 s, also while the
    # corpus is written; pretraining and the study add their own lines
    stages = ProgressLines("demo", 3, unit="stages") if not console.is_terminal else None
    with stages or nullcontext():
        _status(stages, 0, "building the corpus")
        console.rule("[bold]1/3 offline corpus from packaged images")
        built = (
            build_selection(out_dir / "corpus", "quick", progress=console.print)
            if quick
            else build_corpus(out_dir / "corpus", progress=console.print)
        )
        corpus = built.root.resolve()
        console.print(f"corpus in {corpus} (how every label was derived: docs/corpus.md)")

        _status(stages, 1, "pretraining")
        console.rule("[bold]2/3 multi-task pretraining on the corpus (held-out sources never seen)")
        pretrain_cfg = load_pretrain_config(
            demo_config("demo_pretrain.yaml"),
            [
                f"run_dir={out_dir / 'pretrain'}",
                f"tasks={corpus / 'labelled_tasks.yaml'}",  # masked-image modelling left out
                *(QUICK_PRETRAIN if quick else []),
            ],
        )
        run_dir = pretrain.run(pretrain_cfg)
        # the encoder at the end of the recipe's steps: "best" is chosen by the pretraining
        # tasks' validation loss, which says nothing about transfer (and a short run can find
        # its best before the first step: the random weights the baseline already has)
        final = (run_dir / "checkpoints" / "last").resolve()

        _status(stages, 2, "evaluating")
        console.rule("[bold]3/3 transfer to held-out tasks: pretrained vs random init vs raw pixels")
        study_cfg = load_study_config(
            demo_config("demo_study.yaml"),
            [
                f"study_dir={out_dir / 'study'}",
                f"tasks={corpus / 'heldout_tasks.yaml'}",
                f"encoders.0.source={final}",
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


def demo_config(name: str) -> Path:
    """A config file that ships with the demo (``demo_pretrain.yaml``, ``demo_study.yaml``)."""
    return Path(str(files("medfoundry.recipes.demo").joinpath(name)))


def _check_ready(out_dir: Path, quick: bool) -> None:
    heldout = [s for s in SOURCES.values() if s.heldout and (not quick or s.name in QUICK.sources)]
    missing = sorted({p.install_command for s in heldout for p in s.packages if p.folder() is None})
    if missing:
        raise DataError(
            "the demo's held-out tasks need packages that are not installed: "
            + "; ".join(missing)
            + "  (or: make setup)"
        )
    existing = next(p for p in (out_dir, *out_dir.resolve().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < NEEDED_FREE_BYTES:
        raise DataError(
            f"the demo needs about {NEEDED_FREE_BYTES // 2**20} MB free under {existing}, only "
            f"{free // 2**20} MB are; free some space or choose another --out folder"
        )


def _print_headline(console: Console, study_dir: Path) -> None:
    """Per task and mode (the linear probe of a classification task, the frozen decoder of a
    dense one): every encoder's primary score by share of labels and by k-shot, the paired
    differences at few labels, and whether pretraining saved labels."""
    summary = _read(study_dir / "summary.csv")
    paired = _read(study_dir / "paired.csv")
    console.rule("[bold]headline")
    efficiency = _read(study_dir / "efficiency.csv")
    for task, mode in dict.fromkeys((r["task"], r["mode"]) for r in efficiency):
        rows = [
            r for r in efficiency if (r["task"], r["mode"]) == (task, mode) and r["encoder"] not in BASELINES
        ]
        metric = rows[0]["metric"]
        console.print(
            f"[bold]{task}[/] ({HELDOUT_DOMAINS.get(task, 'held out')}): {metric}, "
            f"{MODE_WORDS.get(mode, mode)}, mean over seeds [95% test-set bootstrap interval]"
        )
        for note in _test_split_notes(study_dir, task):
            console.print(f"  [dim]test split: {note}[/]")
        curve = [
            r
            for r in summary
            if (r["task"], r["mode"], r["metric"], r["train_center"]) == (task, mode, metric, ALL)
        ]
        for encoder in dict.fromkeys(r["encoder"] for r in curve):
            mine = [r for r in curve if r["encoder"] == encoder]
            cells = [_score(r, f"{float(r['fraction']):.0%}") for r in _by(mine, "fraction")]
            cells += [_score(r, f"{r['shots']}-shot") for r in _by(mine, "shots")]
            console.print(f"  {encoder:<11} " + "  ".join(cells))
        judged_against = {r["reference"] for r in paired if (r["task"], r["mode"]) == (task, mode)}
        for row in rows:  # each encoder under test (the run's own, a released one) against the baselines
            for against in [b for b in ("random", "pixels") if b in judged_against]:
                console.print(
                    "  "
                    + _few_label_verdict(paired, task, mode=mode, encoder=row["encoder"], against=against)
                )
            seeds = {r.get("n_seeds") for r in curve if r["encoder"] == row["encoder"] and r["fraction"]}
            console.print("  " + saving_sentence({k: _value(v) for k, v in row.items()}) + _one_draw(seeds))
    console.print(
        f"\nreport: {study_dir / 'report.html'}  "
        "(tables: summary.csv, paired.csv, efficiency.csv; raw: results.csv)"
    )


def _test_split_notes(study_dir: Path, task: str) -> list[str]:
    """The study's notes on ``task``'s whole test split (how few groups its intervals rest on,
    ``bootstrap.group_notes``), without their ``test set '<task>/all': `` prefix."""
    path = study_dir / "results.json"
    notes = json.loads(path.read_text()).get("notes", []) if path.is_file() else []
    prefix = f"test set '{task}/{ALL}': "
    return [note.removeprefix(prefix) for note in notes if note.startswith(prefix)]


def _draws(row: dict[str, str]) -> str:
    """On how many paired seeds the encoder scored higher, where there are several."""
    pairs, better = row.get("n_pairs") or "", row.get("n_better") or ""
    return f" ({better} of {pairs} seeds higher)" if better and pairs and int(pairs) > 1 else ""


def _one_draw(seeds: set[str | None]) -> str:
    """A caveat for a curve measured on one seed: one draw of the labelled samples, so a saving
    (or its absence) may not hold for another draw (three seeds of the demo's face task:
    docs/demo.md)."""
    return " (one seed: one draw of the labelled samples, not checked over others)" if seeds == {"1"} else ""


def _by(rows: list[dict[str, str]], key: str) -> list[dict[str, str]]:
    """The rows that have ``key`` (fraction or shots), in increasing order of it."""
    return sorted((r for r in rows if r[key]), key=lambda r: float(r[key]))


def _score(row: dict[str, str], label: str) -> str:
    low, high = float(row["test_ci95_low"] or "nan"), float(row["test_ci95_high"] or "nan")
    interval = "" if math.isnan(low) else f" [{low:.2f},{high:.2f}]"
    return f"{label} {float(row['mean']):.3f}{interval}"


def _few_label_verdict(
    paired: list[dict[str, str]], task: str, *, mode: str, encoder: str, against: str
) -> str:
    """Where, at up to ``FEW_LABELS`` of the labels or in k-shot, the paired 95% interval of
    (``encoder`` - ``against``) in ``mode`` lies above or below zero."""
    rows = [
        r
        for r in paired
        if (r["encoder"], r["reference"], r["task"], r["mode"], r["test_center"])
        == (encoder, against, task, mode, ALL)
        and (not r["fraction"] or float(r["fraction"]) <= FEW_LABELS)
    ]
    if not rows:
        return f"{encoder} vs {against}: not compared"
    better: list[str] = []
    worse: list[str] = []
    unclear: list[str] = []
    for r in sorted(rows, key=lambda r: (bool(r["fraction"]), float(r["fraction"] or r["shots"]))):
        label = f"{float(r['fraction']):.0%}" if r["fraction"] else f"{r['shots']}-shot"
        low, high = float(r["diff_ci95_low"] or "nan"), float(r["diff_ci95_high"] or "nan")
        text = f"{label} {float(r['difference']):+.3f}" + _draws(r)
        (better if low > 0 else worse if high < 0 else unclear).append(text)
    parts = [
        f"{name} at {', '.join(items)}"
        for name, items in (("better", better), ("worse", worse), ("no clear difference", unclear))
        if items
    ]
    return (
        f"{encoder} vs {against} (paired 95% intervals, up to {FEW_LABELS:.0%} of the labels): "
        + "; ".join(parts)
    )


def _value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))

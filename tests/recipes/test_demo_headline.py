"""The demo's headline: every encoder under test (the demo's own run and a released encoder)
gets its verdicts against random init and the raw pixels and its saving sentence; baselines do not."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console

from medfoundry.recipes import demo

TASK = "heldout_nuclei_count"
ENCODERS = ("pretrained", "released", "random", "pixels")


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _study(
    folder: Path, task: str = TASK, mode: str = "linear", metric: str = "balanced_accuracy", seeds: int = 5
) -> Path:
    base = {"task": task, "mode": mode, "metric": metric, "train_center": "all"}
    summary = [
        {
            **base,
            "encoder": e,
            "fraction": f,
            "shots": "",
            "mean": 0.5 + 0.1 * i + f / 10,
            "n_seeds": seeds,
            "test_ci95_low": 0.4,
            "test_ci95_high": 0.9,
        }
        for i, e in enumerate(ENCODERS)
        for f in (0.01, 1.0)
    ]
    # released: better than random at 1 % (interval above 0); pretrained: worse (below 0)
    diffs = {"pretrained": (-0.05, -0.08, -0.02), "released": (0.06, 0.03, 0.09)}
    paired = [
        {
            "encoder": e,
            "reference": ref,
            "task": task,
            "mode": mode,
            "fraction": 0.01,
            "shots": "",
            "test_center": "all",
            "n_pairs": seeds,
            "n_better": seeds - 1 if d > 0 else 0,
            "difference": d,
            "diff_ci95_low": lo,
            "diff_ci95_high": hi,
        }
        for e, (d, lo, hi) in diffs.items()
        for ref in ("random", "pixels")
        if mode == "linear" or ref == "random"  # pixels have no decoder mode
    ]
    efficiency = [
        {
            "encoder": e,
            "task": task,
            "mode": mode,
            "metric": metric,
            "reference": f"random {mode} @ 100%",
            "reference_score": 0.7,
            "reference_n_train": 600,
            "fraction_needed": 0.25 if e == "released" else "nan",
            "n_train_needed": 150 if e == "released" else "nan",
            "full_data_score": 0.8,
        }
        for e in ("pretrained", "released", "pixels")
    ]
    _write(folder / "summary.csv", summary)
    _write(folder / "paired.csv", paired)
    _write(folder / "efficiency.csv", efficiency)
    return folder


def test_headline_judges_every_encoder_under_test_and_no_baseline(tmp_path: Path) -> None:
    console = Console(record=True, width=400)
    demo.job._print_headline(console, _study(tmp_path))
    text = console.export_text()
    assert "pretrained vs random (paired 95% intervals, up to 10% of the labels): worse at 1% -0.050" in text
    assert "released vs random (paired 95% intervals, up to 10% of the labels): better at 1% +0.060" in text
    assert "better at 1% +0.060 (4 of 5 seeds higher)" in text  # a mean carried by most draws, not all
    assert "worse at 1% -0.050 (0 of 5 seeds higher)" in text
    assert "released vs pixels" in text and "pretrained vs pixels" in text
    assert "released (linear) on heldout_nuclei_count: reached random linear @ 100%" in text
    assert "450 labels (75%) saved" in text
    assert "pretrained (linear) on heldout_nuclei_count: no labels shown saved" in text
    assert "pixels vs" not in text and "pixels (linear) on" not in text  # a baseline is not judged
    assert "one seed" not in text
    for encoder in ENCODERS:  # every encoder's scores are listed
        assert f"  {encoder} " in text
    assert "test split:" not in text  # the study noted nothing about it


def test_the_headline_says_how_few_places_a_test_split_holds(tmp_path: Path) -> None:
    study = _study(tmp_path)
    notes = [
        f"test set '{TASK}/all': 160 test items from only 4 groups: its intervals draw the 4 groups whole",
        "test set 'heldout_face_seg/all': all 10 test items come from only 2 groups",
        "baselines: imagenet: not added",
    ]
    (study / "results.json").write_text(json.dumps({"notes": notes}))
    console = Console(record=True, width=400)
    demo.job._print_headline(console, study)
    text = console.export_text()
    assert "  test split: 160 test items from only 4 groups: its intervals draw the 4 groups whole" in text
    assert "10 test items" not in text and "imagenet" not in text  # another task's, not the test split's


def test_a_dense_task_is_judged_in_its_decoder_mode_against_random_init(tmp_path: Path) -> None:
    console = Console(record=True, width=400)
    demo.job._print_headline(
        console, _study(tmp_path, "heldout_face_seg", "frozen-decoder", "mean_dice", seeds=1)
    )
    text = console.export_text()
    assert "heldout_face_seg (in-domain: the face of the other head's MR, segmented): mean_dice, " in text
    assert "decoder trained on the frozen encoder" in text
    assert "released vs random (paired 95% intervals, up to 10% of the labels): better at 1% +0.060" in text
    assert "released (frozen-decoder) on heldout_face_seg: reached random frozen-decoder @ 100%" in text
    assert "vs pixels" not in text and "not compared" not in text  # no decoder on raw pixels
    assert "seeds higher" not in text  # one seed: nothing to count
    # a saving seen on one draw of the labelled slices is said to be one draw
    assert "450 labels (75%) saved" in text
    assert "saved; with all labels it scored 0.800 (one seed: one draw of the labelled samples" in text

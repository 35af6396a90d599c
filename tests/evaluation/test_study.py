"""A whole pretrained-versus-random study on real packaged images: every mode, the built-in
baselines, k-shot episodes, every output, statistics recomputed by hand, bootstrap intervals, the
cross-center matrix, and a killed study that resumes."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats

from medfoundry import safe_writes
from medfoundry.evaluation.paired_table import paired_difference
from medfoundry.evaluation.study_cells import RESULT_COLUMNS, read_results
from medfoundry.recipes import evaluate
from medfoundry.recipes.evaluate import job as evaluate_job
from medfoundry.recipes.evaluate import worker as evaluate_worker
from medfoundry.recipes.evaluate.config import StudyConfig
from medfoundry.safe_writes import temporary_name
from tests.evaluation.conftest import CENTERS, study_config, tasks_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(small_db: Path, sites_db: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tasks = [t for t in tasks_of(small_db, sites_db) if t["name"] != "nuclei_det"]
    cfg = study_config(
        tmp_path_factory.mktemp("study") / "study",
        tasks,
        checkpoint,
        task_modes={"sites": ["linear", "knn"]},
        cross_center=True,
        few_shot={"shots": [1, 2], "episodes": 2},
    )
    return evaluate.run(StudyConfig.model_validate(cfg))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_study_writes_every_output(study: Path) -> None:
    assert {p.name for p in study.iterdir()} >= {
        "study.yaml",
        "plan.json",
        "results.csv",
        "results.json",
        "summary.csv",
        "paired.csv",
        "efficiency.csv",
        "report.html",
        "cells",
        "predictions",
        "features",
    }
    rows = read_results(study / "results.csv")
    assert tuple(_csv(study / "results.csv")[0]) == RESULT_COLUMNS
    pooled = {(r["encoder"], r["task"], r["mode"]) for r in rows if r["train_center"] == "all"}
    modes = {
        "imaging_technique": ("linear", "knn", "finetune"),
        "nuclei_seg": ("frozen-decoder", "finetune", "linear-decoder"),
    }
    modes["sites"] = ("linear", "knn")
    assert pooled == {
        (encoder, task, mode)
        for encoder in ("pretrained", "random")
        for task in modes
        for mode in modes[task]
    } | {
        (  # the raw-pixel baseline is added to every probe mode, and only there
            "pixels",
            task,
            mode,
        )
        for task in ("imaging_technique", "sites")
        for mode in ("linear", "knn")
    }
    fraction_cells = [r for r in rows if r["shots"] is None]
    assert {(r["fraction"], r["seed"]) for r in fraction_cells} == {
        (f, s) for f in (0.25, 1.0) for s in (0, 1)
    }
    # nested subsets: a quarter of the training rows at 25%, all of them at 100%
    n_train = {
        r["fraction"]: r["n_train"]
        for r in fraction_cells
        if r["task"] == "sites" and r["train_center"] == "all"
    }
    assert n_train == {0.25: 15, 1.0: 60}
    assert all(math.isfinite(r["value"]) for r in rows if r["metric"] in ("balanced_accuracy", "mean_dice"))
    assert {r["metric"] for r in rows if r["task"] == "imaging_technique"} >= {
        "auroc",
        "balanced_accuracy",
        "ece",
    }
    # k-shot episodes: the probes of the classification tasks, k per class of the 5 classes
    shots = {
        (r["task"], r["mode"], r["shots"], r["seed"], r["n_train"]) for r in rows if r["shots"] is not None
    }
    assert {(t, m, k, e) for t, m, k, e, _ in shots} == {
        (t, m, k, e)
        for t in ("imaging_technique", "sites")
        for m in ("linear", "knn")
        for k in (1, 2)
        for e in (0, 1)
    }
    assert all(n == 5 * k for _, _, k, _, n in shots)

    efficiency = _csv(study / "efficiency.csv")
    assert all(r["reference"].startswith("random ") for r in efficiency)
    assert not [r for r in efficiency if r["encoder"] == "random"], (
        "the reference is never compared with itself"
    )
    assert {(r["encoder"], r["task"], r["mode"]) for r in efficiency} == {
        k for k in pooled if k[0] != "random"
    }
    assert all(float(r["margin"]) == 0 and r["n_train_needed"] for r in efficiency if r["fraction_needed"])
    paired = _csv(study / "paired.csv")
    assert {(r["encoder"], r["reference"]) for r in paired} == {
        ("pretrained", "random"),
        ("pretrained", "pixels"),
        ("pixels", "random"),
        ("random", "pixels"),
    }
    report = (study / "report.html").read_text()
    # a fraction curve per task, a k-shot curve per classification task, one cross-center figure
    assert report.count("data:image/png;base64,") == 3 + 2 + 1
    assert not re.search(r"(src|href)=\"(?!data:)", report), "the report must be self-contained"
    assert "paired bootstrap interval" in report and "never compared with itself" in report  # the rule
    assert "no ImageNet weights of &#x27;resnet10t&#x27;" in report  # the missing baseline, said once
    document = json.loads((study / "results.json").read_text())
    assert len(document["cells"]) == len(rows) and document["bootstrap"]["resamples"] == 1000
    assert {s["metric"] for s in document["summary"]} >= {"mean_dice", "balanced_accuracy"}


def test_segmentation_cells_report_dice_and_pixel_share_per_class(study: Path) -> None:
    rows = [r for r in read_results(study / "results.csv") if r["task"] == "nuclei_seg"]
    by_cell: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in rows:
        by_cell.setdefault((r["encoder"], r["mode"], r["fraction"], r["seed"]), {})[r["metric"]] = r["value"]
    for metrics in by_cell.values():
        assert {"dice/background", "dice/nucleus", "share/background", "share/nucleus"} <= set(metrics)
        assert metrics["share/background"] + metrics["share/nucleus"] == pytest.approx(1.0)
    # the share is the test set's, the same for every model
    assert len({round(m["share/nucleus"], 12) for m in by_cell.values()}) == 1
    report = (study / "report.html").read_text()
    assert "nuclei_seg: Dice per class at 100%" in report and "of pixels)" in report


def test_summary_statistics_match_hand_computed_values(study: Path) -> None:
    rows = [r for r in read_results(study / "results.csv")]
    summary = _csv(study / "summary.csv")
    keys = ("encoder", "task", "mode", "fraction", "shots", "train_center", "test_center", "metric")
    assert len(summary) == len({tuple(r[k] for k in keys) for r in rows})
    for s in summary[:: max(1, len(summary) // 25)]:
        values = [
            r["value"]
            for r in rows
            if tuple(str("" if r[k] is None else r[k]) for k in keys) == tuple(s[k] for k in keys)
        ]
        assert len(values) == 2 == int(s["n_seeds"])
        mean = (values[0] + values[1]) / 2
        std = abs(values[0] - values[1]) / math.sqrt(2)  # the n-1 standard deviation of two values
        half = 12.706204736 * std / math.sqrt(2)  # t_{0.975, 1}
        assert float(s["mean"]) == pytest.approx(mean)
        assert float(s["std"]) == pytest.approx(std, abs=1e-12)
        # clipped to the metrics' range [0, 1]
        assert float(s["seeds_ci95_low"]) == pytest.approx(max(0.0, mean - half), abs=1e-9)
        assert float(s["seeds_ci95_high"]) == pytest.approx(min(1.0, mean + half), abs=1e-9)
    assert stats.t.ppf(0.975, 1) == pytest.approx(12.706204736)


def test_bootstrap_intervals_contain_the_score_and_stay_in_range(study: Path) -> None:
    rows = [r for r in read_results(study / "results.csv") if math.isfinite(r["value"])]
    with_interval = [r for r in rows if math.isfinite(r["test_ci95_low"])]
    assert len(with_interval) > 0.9 * len(rows)
    for r in with_interval:
        assert 0.0 <= r["test_ci95_low"] <= r["value"] <= r["test_ci95_high"] <= 1.0, r
    summary = [r for r in _csv(study / "summary.csv") if r["test_ci95_low"] not in ("", "nan")]
    for s in summary:
        assert 0.0 <= float(s["test_ci95_low"]) <= float(s["mean"]) <= float(s["test_ci95_high"]) <= 1.0, s
    # at 100% both seeds of a linear probe fit the same training set: no spread over seeds, yet
    # the test set's own uncertainty is there
    full = [s for s in summary if s["fraction"] == "1.0" and s["mode"] == "linear" and s["metric"] == "auroc"]
    assert full and all(float(s["seeds_ci95_high"]) == float(s["seeds_ci95_low"]) for s in full)
    assert any(float(s["test_ci95_high"]) > float(s["test_ci95_low"]) for s in full)
    chance = {s["chance"] for s in summary if s["task"] == "sites" and s["metric"] == "balanced_accuracy"}
    assert chance == {"0.2"}  # five classes in its test split


def test_paired_intervals_use_the_same_test_items(study: Path) -> None:
    from medfoundry.recipes.evaluate.job import read_study

    tables = read_study(study).tables  # rebuilt from the folder alone
    assert len(tables.paired) == len(_csv(study / "paired.csv")) > 0
    for r in tables.paired:
        assert -1.0 <= r["diff_ci95_low"] <= r["difference"] <= r["diff_ci95_high"] <= 1.0, r
        assert 0 <= r["n_better"] <= r["n_pairs"], r
    several = [r for r in tables.paired if r["n_pairs"] > 1]
    assert several  # two seeds: the report says on how many each difference held
    assert (
        f"{several[0]['n_better']}/{several[0]['n_pairs']} seeds higher"
        in (study / "report.html").read_text()
    )
    # an encoder against itself, on the very arrays the table pairs: exactly zero
    from medfoundry.evaluation.bootstrap import Resampler
    from medfoundry.evaluation.predictions import ITEM_GROUPS, N_ITEMS, load_predictions
    from medfoundry.evaluation.study_cells import Cell
    from medfoundry.tasks import TaskSpec, build_task

    spec = TaskSpec.model_validate(next(t for t in yaml_tasks(study) if t["name"] == "imaging_technique"))
    items = load_predictions(
        study / "predictions" / f"{Cell('pretrained', 'imaging_technique', 'linear', 0.25, 0).id}.npz"
    )
    n = int(items["all"].pop(N_ITEMS))
    groups = items["all"].pop(ITEM_GROUPS)  # each test image's group (its file's, here), by index
    assert groups.shape == (n,) and groups.min() == 0
    assert set(np.unique(groups).tolist()) == set(range(int(groups.max()) + 1))
    scores = Resampler().scores(
        build_task(spec).metrics(), items["all"], n=n, name="imaging_technique/all", groups=groups
    )
    seeds = [(0.5, scores["balanced_accuracy"])]
    assert paired_difference(seeds, seeds) == (0.0, 0.0, 0.0)


def test_a_study_whose_cells_stored_no_item_groups_resamples_images_and_says_so(
    study: Path, tmp_path: Path
) -> None:
    import shutil

    from medfoundry.evaluation.predictions import ITEM_GROUPS, load_predictions, save_predictions
    from medfoundry.recipes.evaluate.job import read_study

    older = shutil.copytree(study, tmp_path / "study")
    cell = next((older / "predictions").glob("pretrained-imaging_technique-linear-*.npz"))
    items = load_predictions(cell)
    assert all(ITEM_GROUPS in arrays for arrays in items.values())
    save_predictions(
        cell, {test: {k: v for k, v in arrays.items() if k != ITEM_GROUPS} for test, arrays in items.items()}
    )
    tables = read_study(older).tables
    assert any(
        note.startswith("task 'imaging_technique': cells of test set(s) all store no item groups")
        for note in tables.notes
    )
    assert not any("store no item groups" in note and "'sites'" in note for note in tables.notes)  # untouched
    rows = [r for r in tables.paired if r["task"] == "imaging_technique"]
    assert rows and all(-1.0 <= r["diff_ci95_low"] <= r["diff_ci95_high"] <= 1.0 for r in rows)


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal rows, NaN equal to NaN."""
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(x[k] == y[k] or (x[k] != x[k] and y[k] != y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def yaml_tasks(study: Path) -> list[dict[str, Any]]:
    import yaml

    tasks: list[dict[str, Any]] = yaml.safe_load((study / "study.yaml").read_text())["tasks"]
    return tasks


def test_center_column_gives_a_train_by_test_matrix(study: Path) -> None:
    rows = [r for r in read_results(study / "results.csv") if r["train_center"] != "all"]
    assert {r["task"] for r in rows} == {"sites"}
    for encoder in ("pretrained", "random"):
        for mode in ("linear", "knn"):
            for seed in (0, 1):
                cell = [
                    r
                    for r in rows
                    if (r["encoder"], r["mode"], r["seed"], r["metric"])
                    == (encoder, mode, seed, "balanced_accuracy")
                ]
                matrix = {(r["train_center"], r["test_center"]): r["value"] for r in cell}
                assert len(cell) == len(matrix) == len(CENTERS) ** 2
                assert set(matrix) == {(a, b) for a in CENTERS for b in CENTERS}
                # each center trains on its own 20 training crops (4 per class), at fraction 1
                assert {r["n_train"] for r in cell} == {20} and {r["fraction"] for r in cell} == {1.0}
    summary = [r for r in _csv(study / "summary.csv") if r["train_center"] != "all"]
    assert len({(r["train_center"], r["test_center"]) for r in summary}) == 9


def test_killed_study_resumes_and_skips_finished_cells(
    sites_db: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = study_config(
        tmp_path / "study", tasks_of(sites_db), checkpoint, modes=["linear", "knn"], baselines=[]
    )
    uninterrupted = read_results(
        evaluate.run(StudyConfig.model_validate({**cfg, "study_dir": str(tmp_path / "full")})) / "results.csv"
    )

    calls: list[Any] = []
    real = evaluate_worker.run_probe_cell

    def killed_after_five(cell: Any, *args: Any, **kwargs: Any) -> Any:
        if len(calls) == 5:
            raise KeyboardInterrupt  # what Ctrl-C (or a killed job's last moment) looks like
        calls.append(cell)
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(evaluate_worker, "run_probe_cell", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(StudyConfig.model_validate(cfg))
    assert len(list((tmp_path / "study" / "cells").glob("*.json"))) == 5
    assert len(read_results(tmp_path / "study" / "results.csv")) == 5 * 4  # 4 metrics per finished cell

    finished, calls[:] = list(calls), []
    monkeypatch.setattr(
        evaluate_worker,
        "run_probe_cell",
        lambda cell, *args, **kwargs: calls.append(cell) or real(cell, *args, **kwargs),
    )
    evaluate.run(StudyConfig.model_validate(cfg))
    assert len(calls) == 2 * 2 * 2 * 2 - 5 and not set(calls) & set(finished)
    resumed = read_results(tmp_path / "study" / "results.csv")
    assert _same(resumed, uninterrupted)

    # a new fraction runs only its own cells; the others are kept
    calls[:] = []
    evaluate.run(StudyConfig.model_validate({**cfg, "fractions": [0.25, 0.5, 1.0]}))
    assert {c.fraction for c in calls} == {0.5} and len(calls) == 2 * 2 * 2
    assert np.isclose(len(read_results(tmp_path / "study" / "results.csv")), 1.5 * len(uninterrupted))


@pytest.mark.integration
def test_a_study_without_terminal_logs_its_progress(
    sites_db: Path,
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import time

    from medfoundry.training import progress

    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.2)
    real = evaluate_worker.run_probe_cell
    monkeypatch.setattr(evaluate_worker, "run_probe_cell", lambda *a, **k: time.sleep(0.25) or real(*a, **k))
    cfg = study_config(
        tmp_path / "s", tasks_of(sites_db), checkpoint, modes=["knn"], baselines=[], progress=True
    )
    with caplog.at_level(logging.INFO, logger="medfoundry.progress"):
        evaluate.run(StudyConfig.model_validate({**cfg, "seeds": 1}))
    lines = [r.getMessage() for r in caplog.records if r.name == "medfoundry.progress"]
    assert len(lines) >= 4 and all(line.startswith("evaluate: ") for line in lines)
    assert lines[-1].startswith("evaluate: 4/4 cells (100%)")


def test_study_yaml_is_never_seen_half_written(
    sites_db: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live workers of other jobs read ``study.yaml``: it is written whole and renamed into place."""
    renamed: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording(src: Any, dst: Any) -> None:
        renamed.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    def stopped(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(safe_writes.os, "replace", recording)
    monkeypatch.setattr(evaluate_job, "work", stopped)
    cfg = study_config(tmp_path / "study", tasks_of(sites_db), checkpoint, modes=["linear"], baselines=[])
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(StudyConfig.model_validate(cfg))
    # written under its temporary name, then renamed into place in one step
    assert (temporary_name(Path("study.yaml")).name, "study.yaml") in renamed
    assert yaml.safe_load((tmp_path / "study" / "study.yaml").read_text())["study_dir"] == cfg["study_dir"]

"""A whole pretrained-versus-random study on real packaged images: every mode, every output,
statistics recomputed by hand, the cross-center matrix, and a killed study that resumes."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from medfoundry.evaluation.study_cells import RESULT_COLUMNS, read_results
from medfoundry.recipes import evaluate
from medfoundry.recipes.evaluate_config import StudyConfig
from tests.evaluation.conftest import CENTERS, study_config, tasks_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(demo_db: Path, sites_db: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tasks = [t for t in tasks_of(demo_db, sites_db) if t["name"] != "nuclei_det"]
    cfg = study_config(
        tmp_path_factory.mktemp("study") / "study",
        tasks,
        checkpoint,
        task_modes={"sites": ["linear", "knn"]},
        cross_center=True,
    )
    return evaluate.run(StudyConfig.model_validate(cfg))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_study_writes_every_output(study: Path) -> None:
    assert {p.name for p in study.iterdir()} >= {
        "study.yaml",
        "results.csv",
        "summary.csv",
        "efficiency.csv",
        "report.html",
        "cells",
        "features",
    }
    rows = read_results(study / "results.csv")
    assert tuple(_csv(study / "results.csv")[0]) == RESULT_COLUMNS
    pooled = {(r["encoder"], r["task"], r["mode"]) for r in rows if r["train_center"] == "all"}
    assert pooled == {
        (encoder, task, mode)
        for encoder in ("pretrained", "random")
        for task, modes in {
            "modality": ("linear", "knn", "finetune"),
            "nuclei_seg": ("frozen-decoder", "finetune"),
            "sites": ("linear", "knn"),
        }.items()
        for mode in modes
    }
    assert {(r["fraction"], r["seed"]) for r in rows} == {(f, s) for f in (0.25, 1.0) for s in (0, 1)}
    # nested subsets: a quarter of the training rows at 25%, all of them at 100%
    n_train = {
        r["fraction"]: r["n_train"] for r in rows if r["task"] == "sites" and r["train_center"] == "all"
    }
    assert n_train == {0.25: 15, 1.0: 60}
    assert all(math.isfinite(r["value"]) for r in rows if r["metric"] in ("balanced_accuracy", "mean_dice"))

    efficiency = _csv(study / "efficiency.csv")
    assert {(r["encoder"], r["task"], r["mode"]) for r in efficiency} == pooled
    assert all(r["reference"].startswith("random ") for r in efficiency)
    report = (study / "report.html").read_text()
    assert (
        report.count("data:image/png;base64,") == 3 + 2 * 2
    )  # a curve per task, a heat map per encoder x mode
    assert not re.search(r"(src|href)=\"(?!data:)", report), "the report must be self-contained"


def test_summary_statistics_match_hand_computed_values(study: Path) -> None:
    rows = read_results(study / "results.csv")
    summary = _csv(study / "summary.csv")
    assert len(summary) == len(
        {tuple(r[k] for k in RESULT_COLUMNS if k not in ("seed", "n_train", "value")) for r in rows}
    )
    for s in summary[:: max(1, len(summary) // 25)]:
        values = [
            r["value"]
            for r in rows
            if (
                r["encoder"],
                r["task"],
                r["mode"],
                r["fraction"],
                r["train_center"],
                r["test_center"],
                r["metric"],
            )
            == (
                s["encoder"],
                s["task"],
                s["mode"],
                float(s["fraction"]),
                s["train_center"],
                s["test_center"],
                s["metric"],
            )
        ]
        assert len(values) == 2 == int(s["n_seeds"])
        mean = (values[0] + values[1]) / 2
        std = abs(values[0] - values[1]) / math.sqrt(2)  # the n-1 standard deviation of two values
        half = 12.706204736 * std / math.sqrt(2)  # t_{0.975, 1}
        assert float(s["mean"]) == pytest.approx(mean)
        assert float(s["std"]) == pytest.approx(std, abs=1e-12)
        assert float(s["ci95_low"]) == pytest.approx(mean - half, abs=1e-9)
        assert float(s["ci95_high"]) == pytest.approx(mean + half, abs=1e-9)
    assert stats.t.ppf(0.975, 1) == pytest.approx(12.706204736)


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
    cfg = study_config(tmp_path / "study", tasks_of(sites_db), checkpoint, modes=["linear", "knn"])
    uninterrupted = read_results(
        evaluate.run(StudyConfig.model_validate({**cfg, "study_dir": str(tmp_path / "full")})) / "results.csv"
    )

    calls: list[Any] = []
    real = evaluate.run_probe_cell

    def killed_after_five(cell: Any, *args: Any) -> Any:
        if len(calls) == 5:
            raise KeyboardInterrupt  # what Ctrl-C (or a killed job's last moment) looks like
        calls.append(cell)
        return real(cell, *args)

    monkeypatch.setattr(evaluate, "run_probe_cell", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(StudyConfig.model_validate(cfg))
    assert len(list((tmp_path / "study" / "cells").glob("*.json"))) == 5
    assert len(read_results(tmp_path / "study" / "results.csv")) == 5 * 3  # 3 metrics per finished cell

    finished, calls[:] = list(calls), []
    monkeypatch.setattr(
        evaluate, "run_probe_cell", lambda cell, *args: calls.append(cell) or real(cell, *args)
    )
    evaluate.run(StudyConfig.model_validate(cfg))
    assert len(calls) == 2 * 2 * 2 * 2 - 5 and not set(calls) & set(finished)
    resumed = read_results(tmp_path / "study" / "results.csv")
    assert resumed == uninterrupted

    # a new fraction runs only its own cells; the others are kept
    calls[:] = []
    evaluate.run(StudyConfig.model_validate({**cfg, "fractions": [0.25, 0.5, 1.0]}))
    assert {c.fraction for c in calls} == {0.5} and len(calls) == 2 * 2 * 2
    assert np.isclose(len(read_results(tmp_path / "study" / "results.csv")), 1.5 * len(uninterrupted))

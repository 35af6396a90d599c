"""Probe cells of a study. Levels chosen per cell on validation (``probe.feature_level_choices``):
each candidate reads exactly the features of its levels, the lowest validation log-loss wins, a
study names the choice of every probe cell, and the transfer monitor (which scores on validation)
refuses it. Cells with the same training set (every seed at 100 %) share one fit."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from medfoundry.data import ManifestSource, read_manifest
from medfoundry.evaluation import cell_runs, load_encoder
from medfoundry.evaluation.features import extract_features
from medfoundry.evaluation.level_choice import extracted_levels, fit_probe_choosing_levels
from medfoundry.evaluation.probes import LabelledFeatures, ProbeConfig, fit_probe, log_loss
from medfoundry.evaluation.transfer_monitor import TransferMonitorConfig
from medfoundry.recipes import evaluate
from medfoundry.recipes.evaluate.config import StudyConfig
from medfoundry.tasks import TaskSpec, build_task, load_task_database
from tests.evaluation.conftest import study_config, tasks_of

CHOICES = [[0], [2], [-2, -1]]


def test_each_candidate_reads_the_features_of_its_own_levels(small_db: Path, checkpoint: Path) -> None:
    """The union is extracted once; a candidate's columns equal extracting its levels alone."""
    records = read_manifest(ManifestSource(path=small_db.parent / "imaging_technique.csv"), "image", [])[:6]
    encoder = load_encoder(checkpoint)
    levels, columns = extracted_levels(encoder, feature_levels=[-1], feature_level_choices=CHOICES)
    n = encoder.num_levels
    assert levels == sorted({0, 2, n - 2, n - 1})
    union = extract_features(encoder, records, feature_levels=levels)
    assert list(columns) == ["0", "2", "-2 -1"]
    for choice, name in zip(CHOICES, columns, strict=True):
        alone = extract_features(encoder, records, feature_levels=choice)
        np.testing.assert_allclose(union[:, columns[name]], alone, rtol=1e-5, atol=1e-6)
    # without candidates: the fixed levels and no columns (the probe reads every column)
    assert extracted_levels(encoder, feature_levels=[-2, -1], feature_level_choices=[]) == ([-2, -1], {})


def test_the_candidate_with_the_lowest_validation_log_loss_is_kept() -> None:
    # columns 0-7 carry the class, 8-39 are noise: a probe on the noise alone is near chance
    rng = np.random.default_rng(0)
    spec = TaskSpec(name="t", type="classification", classes=["a", "b", "c"], source={"path": "t"})
    task = build_task(spec)

    def split(n: int) -> LabelledFeatures:
        y = rng.integers(0, 3, size=n)
        signal = np.eye(3, 8)[y] * 1.5 + rng.normal(size=(n, 8))
        return LabelledFeatures(np.hstack([signal, rng.normal(size=(n, 32))]).astype(np.float32), y)

    train, val = split(60), split(200)
    columns = {"noise": np.arange(8, 40), "all": np.arange(40), "signal": np.arange(8)}
    cfg = ProbeConfig(c_values=[0.01, 0.1, 1.0], class_weight="balanced")
    losses = {}
    for name, cols in columns.items():
        sliced = LabelledFeatures(val.features[:, cols], val.targets)
        on_train = LabelledFeatures(train.features[:, cols], train.targets)
        probe = fit_probe("linear", task, on_train, sliced, cfg)
        losses[name] = log_loss(probe.predict(sliced.features), val.targets, balanced=True)
    chosen = fit_probe_choosing_levels("linear", task, train, val, cfg, columns)
    assert chosen.levels == min(losses, key=losses.__getitem__) != "noise"
    assert chosen.val_loss == pytest.approx(losses[chosen.levels])
    assert losses["noise"] > np.log(3) - 0.05  # no better than chance: the choice is not a coin toss
    np.testing.assert_array_equal(  # predictions read the chosen columns of the whole table
        chosen.predict(val.features), chosen.probe.predict(val.features[:, columns[chosen.levels]])
    )
    knn = fit_probe_choosing_levels("knn", task, train, val, cfg, columns)
    assert knn.levels != "noise"


@pytest.mark.integration
def test_a_study_names_the_levels_each_probe_cell_chose(
    small_db: Path, checkpoint: Path, tmp_path: Path
) -> None:
    tasks = [t for t in tasks_of(small_db) if t["name"] == "imaging_technique"]
    cfg = study_config(
        tmp_path / "study",
        tasks,
        checkpoint,
        task_names=["imaging_technique"],
        modes=["linear", "knn"],
        seeds=1,
        probe={"c_values": [0.01, 1.0], "k": 5, "feature_level_choices": CHOICES},
    )
    study = evaluate.run(StudyConfig.model_validate(cfg))
    with (study / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    chosen = {(r["encoder"], r["mode"], r["fraction"]): r["probe_levels"] for r in rows}
    assert {k[0] for k in chosen} == {"pretrained", "random", "pixels"}
    for (encoder, _, _), levels in chosen.items():
        assert levels == "" if encoder == "pixels" else levels in {"0", "2", "-2 -1"}


def test_the_transfer_monitor_refuses_level_choices(small_db: Path) -> None:
    specs = [spec.model_dump(mode="json") for spec in load_task_database(small_db)]
    with pytest.raises(ValidationError, match="feature_level_choices is for studies"):
        TransferMonitorConfig.model_validate(
            {"tasks": specs, "task_names": ["imaging_technique"], "probe": {"feature_level_choices": [[0]]}}
        )


@pytest.mark.integration
def test_seeds_with_the_same_training_set_share_one_fit(
    small_db: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fits = []
    original = cell_runs.fit_probe

    def counted(*args: object, **kwargs: object) -> object:
        fits.append(len(args[2]))  # the training set's size
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cell_runs, "fit_probe", counted)
    tasks = [t for t in tasks_of(small_db) if t["name"] == "imaging_technique"]
    cfg = study_config(
        tmp_path / "study", tasks, checkpoint, task_names=["imaging_technique"], modes=["linear"], seeds=3
    )
    study = evaluate.run(StudyConfig.model_validate(cfg))
    with (study / "results.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "balanced_accuracy"]
    assert len(rows) == 3 * 2 * 3  # 3 encoders (pixels included), 2 fractions, 3 seeds
    full = max(fits)
    assert fits.count(full) == 3 and len(fits) == 3 * (3 + 1)  # 100 %: one fit per encoder
    for encoder in ("pretrained", "random", "pixels"):
        values = {r["value"] for r in rows if r["encoder"] == encoder and r["fraction"] == "1.0"}
        quarter = {r["value"] for r in rows if r["encoder"] == encoder and r["fraction"] == "0.25"}
        assert len(values) == 1 and len(quarter) > 1  # every 100 % seed reports the shared fit

"""The transfer monitor: its settings and their one path rule, the study's splits and features,
the test split never decoded, and a score that leaves the model and the RNG streams as it found them."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from medfoundry.errors import ConfigError
from medfoundry.evaluation import transfer_monitor
from medfoundry.evaluation.features import extract_features
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder
from medfoundry.evaluation.study_data import load_study_task_data
from medfoundry.evaluation.study_pixels import StudyPixels
from medfoundry.evaluation.transfer_monitor import TransferMonitorConfig, load_transfer_monitor
from medfoundry.models.config import EncoderConfig
from medfoundry.models.encoder import create_encoder
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.tasks import build_task, load_task_database, with_classes

MODEL = {"image_size": 32, "encoder": {"name": "resnet10t"}}


def _monitor(small_db: Path, **settings: Any) -> TransferMonitorConfig:
    specs = [spec.model_dump(mode="json") for spec in load_task_database(small_db)]
    return TransferMonitorConfig.model_validate(
        {"tasks": specs, "task_names": ["imaging_technique"], **settings}
    )


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_select_best_by_transfer_needs_a_monitor(small_db: Path, tmp_path: Path) -> None:
    config = _write(
        tmp_path / "c.yaml",
        {
            "run_dir": "run",
            "tasks": str(small_db),
            "model": MODEL,
            "training": {"select_best_by": "transfer"},
        },
    )
    with pytest.raises(ConfigError) as error:
        load_pretrain_config(config)
    assert str(error.value).count("\n") == 0
    assert "training.select_best_by" in str(error.value) and "training.transfer_monitor" in str(error.value)


def test_an_unknown_monitored_task_is_named(small_db: Path, tmp_path: Path) -> None:
    monitor = {"tasks": str(small_db), "task_names": ["imaging_tecnique"]}
    config = _write(
        tmp_path / "c.yaml",
        {"run_dir": "run", "tasks": str(small_db), "model": MODEL, "training": {"transfer_monitor": monitor}},
    )
    with pytest.raises(
        ConfigError,
        match=r"transfer_monitor.task_names: .*unknown task 'imaging_tecnique'.*'imaging_technique'",
    ):
        load_pretrain_config(config)


def test_the_monitor_tasks_path_follows_the_one_path_rule(
    small_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written in the file: relative to the file; given with --set: relative to the current folder."""
    config_dir, cwd = tmp_path / "configs", tmp_path / "work"
    for folder in (config_dir / "db", cwd / "mine"):
        folder.mkdir(parents=True)
        (folder / "held.yaml").write_text(
            yaml.safe_dump({"tasks": [{"name": "a", "type": "classification", "source": {"path": "a.csv"}}]})
        )
    monkeypatch.chdir(cwd)
    monitor = {"tasks": "db/held.yaml", "task_names": ["a"]}
    config = _write(
        config_dir / "c.yaml",
        {"run_dir": "run", "tasks": str(small_db), "model": MODEL, "training": {"transfer_monitor": monitor}},
    )
    cfg = load_pretrain_config(config).training.transfer_monitor
    assert cfg is not None and cfg.tasks[0].source.path == config_dir / "db" / "a.csv"
    cfg = load_pretrain_config(
        config, ["training.transfer_monitor.tasks=mine/held.yaml"]
    ).training.transfer_monitor
    assert cfg is not None and cfg.tasks[0].source.path == cwd / "mine" / "a.csv"
    # a list of specs in the file: its source paths are relative to the file, --set ones to the folder
    listed = {**monitor, "tasks": [{"name": "a", "type": "classification", "source": {"path": "db/a.csv"}}]}
    config = _write(
        config_dir / "c.yaml",
        {"run_dir": "run", "tasks": str(small_db), "model": MODEL, "training": {"transfer_monitor": listed}},
    )
    cfg = load_pretrain_config(config).training.transfer_monitor
    assert cfg is not None and cfg.tasks[0].source.path == config_dir / "db" / "a.csv"
    override = "training.transfer_monitor.tasks.0.source.path=mine/b.csv"
    cfg = load_pretrain_config(config, [override]).training.transfer_monitor
    assert cfg is not None and cfg.tasks[0].source.path == cwd / "mine" / "b.csv"


def test_a_task_without_probes_is_refused_by_name(small_db: Path) -> None:
    cfg = _monitor(small_db).model_copy(
        update={"task_names": ["imaging_technique", "nuclei_seg", "nuclei_det"]}
    )
    with pytest.raises(ConfigError) as error:
        load_transfer_monitor(cfg, image_size=32)
    lines = str(error.value).splitlines()
    assert len(lines) == 2
    assert "task 'nuclei_seg' (segmentation) cannot be monitored" in lines[0]
    assert "task 'nuclei_det' (detection)" in lines[1]


def test_it_reads_the_study_splits_capped_and_never_the_test_split(
    small_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[Any] = []
    prepare = transfer_monitor.prepare_arrays

    def recording(name: str, records: Any, *args: Any, **kwargs: Any) -> Any:
        decoded.extend(records)
        return prepare(name, records, *args, **kwargs)

    monkeypatch.setattr(transfer_monitor, "prepare_arrays", recording)
    monitor = load_transfer_monitor(_monitor(small_db, max_images=25), image_size=32)
    spec = with_classes(next(s for s in load_task_database(small_db) if s.name == "imaging_technique"))
    study = load_study_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.2)
    task = monitor.tasks["imaging_technique"]
    assert len(study.splits["train"]) > 25 and len(task.train.records) == 25
    assert len(task.val.records) == min(25, len(study.splits["val"]))
    assert {r.key for r in task.train.records} <= {r.key for r in study.splits["train"]}
    assert {r.key for r in task.val.records} <= {r.key for r in study.splits["val"]}
    assert {r.key for r in decoded} == {r.key for r in (*task.train.records, *task.val.records)}
    assert not {r.key for r in decoded} & {r.key for r in study.splits["test"]}
    assert set(task.train.targets.tolist()) == set(range(5))  # stratified: every class in 25 of them
    assert task.train.images.shape == (25, 3, 32, 32) and task.train.images.dtype == torch.uint8


def test_features_equal_the_study_extraction(small_db: Path) -> None:
    """The monitor's in-memory pixels and pooling give the features a study computes."""
    probe = {"feature_levels": [-2, -1], "batch_size": 7}
    monitor = load_transfer_monitor(_monitor(small_db, probe=probe), image_size=32)
    encoder = create_encoder("resnet10t", img_size=32).eval()
    records = monitor.tasks["imaging_technique"].val.records
    ours = monitor._embed(encoder, monitor.tasks["imaging_technique"].val.images, torch.device("cpu"))
    study_encoder = PretrainedEncoder(
        encoder, config=EncoderConfig(name="resnet10t"), image_size=32, source="test", pretrained=False
    )
    spec = with_classes(next(s for s in load_task_database(small_db) if s.name == "imaging_technique"))
    study = load_study_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.2)
    theirs = extract_features(  # as a study's worker does (recipes/evaluate/worker.py)
        study_encoder,
        records,
        preprocessing=spec.preprocessing,
        arrays=StudyPixels(study, None).arrays(records, 32),
        feature_levels=[-2, -1],
    )
    assert ours.shape == theirs.shape == (len(records), 512 + 256)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_score_leaves_mode_weights_and_random_streams_as_they_were(small_db: Path) -> None:
    monitor = load_transfer_monitor(_monitor(small_db), image_size=32)
    encoder = create_encoder("resnet10t", img_size=32, use_groupnorm=False).train()  # BatchNorm
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    expected = (torch.rand(1), np.random.rand(), random.random())
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    scores = monitor.score(encoder, device=torch.device("cpu"))
    assert (torch.rand(1), np.random.rand(), random.random()) == expected
    assert encoder.training
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # running stats too
    assert set(scores.scores["imaging_technique"]) == {"linear", "knn"}
    assert scores.mean == pytest.approx(np.mean(list(scores.scores["imaging_technique"].values())))
    assert set(scores.metrics()) == {"imaging_technique/linear", "imaging_technique/knn", "mean", "seconds"}


def test_cross_validation_keeps_groups_whole_and_scores_pooled_out_of_fold_predictions(
    small_db: Path,
) -> None:
    """With folds: 3 every training and validation image is scored once, by probes that saw none
    of its group; the score is the metric on those pooled predictions."""
    cfg = _monitor(small_db, max_images=60, folds=3)
    monitor = load_transfer_monitor(cfg, image_size=32)
    task = monitor.tasks["imaging_technique"]
    records = [*task.train.records, *task.val.records]
    assert task.folds is not None and len(task.folds) == len(records)
    folds_of_group: dict[str | None, set[int]] = {}
    for record, fold in zip(records, task.folds.tolist(), strict=True):
        folds_of_group.setdefault(record.group, set()).add(fold)
    assert len(folds_of_group) >= 3 and all(len(f) == 1 for f in folds_of_group.values())
    assert set(task.folds.tolist()) == {0, 1, 2}

    encoder = create_encoder("resnet10t", img_size=32).eval()
    device = torch.device("cpu")
    features = np.concatenate([monitor._embed(encoder, s.images, device) for s in (task.train, task.val)])
    pool = transfer_monitor.LabelledFeatures(features, np.concatenate([task.train.targets, task.val.targets]))
    # the kNN's prediction of a fold does not read that fold's labels
    knn = monitor._out_of_fold("knn", task.task, pool, task.folds)
    held = np.flatnonzero(task.folds == 0)
    relabelled = pool.targets.copy()
    relabelled[held] = (relabelled[held] + 1) % 5
    moved = monitor._out_of_fold(
        "knn", task.task, transfer_monitor.LabelledFeatures(features, relabelled), task.folds
    )
    np.testing.assert_array_equal(knn[held], moved[held])
    assert not np.array_equal(knn[task.folds != 0], moved[task.folds != 0])  # the other folds do read them

    scores = monitor.score(encoder, device=device).scores["imaging_technique"]
    for mode in ("linear", "knn"):
        expected = transfer_monitor.probe_metrics(
            task.task, monitor._out_of_fold(mode, task.task, pool, task.folds), pool.targets
        )["balanced_accuracy"]
        assert scores[mode] == pytest.approx(expected)
    single = load_transfer_monitor(_monitor(small_db, max_images=60), image_size=32)
    assert single.tasks["imaging_technique"].folds is None
    other_deal = load_transfer_monitor(_monitor(small_db, max_images=60, folds=3, fold_seed=1), image_size=32)
    other = other_deal.tasks["imaging_technique"]
    assert other.folds is not None and not np.array_equal(other.folds, task.folds)
    assert [r.key for r in other.train.records] == [r.key for r in task.train.records]  # the same splits


def test_more_folds_than_groups_is_one_line_naming_the_task(small_db: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_transfer_monitor(_monitor(small_db, max_images=60, folds=40), image_size=32)
    message = str(error.value)
    assert "\n" not in message
    assert "transfer_monitor.folds" in message and "'imaging_technique'" in message and "40 folds" in message

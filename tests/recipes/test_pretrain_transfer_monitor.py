"""Pretraining with the transfer monitor: when it scores, which step ``best`` is, that it changes
nothing of the training itself, and that a resumed run keeps the best score it had."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import yaml

from medfoundry.evaluation.transfer_monitor import TransferMonitor, TransferScores
from medfoundry.recipes import pretrain
from medfoundry.recipes.pretrain import job as pretrain_job
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.training.metrics_log import read_metrics
from tests.conftest import tiny_config

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, small_db: Path, name: str, **settings: Any) -> Path:
    monitor = {
        "tasks": str(small_db),
        "task_names": ["imaging_technique"],
        "every_steps": 2,
        "max_images": 40,
    }
    cfg = tiny_config(tmp_path / name, str(small_db), **{"training.transfer_monitor": monitor, **settings})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == kind]


def _best(run_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((run_dir / "checkpoints" / "best" / "config.json").read_text())
    return config


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(checkpoint / "model.safetensors"))


def _scripted(monkeypatch: pytest.MonkeyPatch, means: Iterator[float]) -> None:
    """The monitor's scores, one mean per evaluation in order (the real scores are too close to
    chance on a few tiny steps to say which step is best)."""

    def score(self: TransferMonitor, encoder: Any, *, device: torch.device) -> TransferScores:
        mean = next(means)
        return TransferScores({"imaging_technique": {"linear": mean, "knn": mean}}, mean, 0.0)

    monkeypatch.setattr(TransferMonitor, "score", score)


def test_scores_are_logged_at_step_0_every_n_steps_and_the_last(small_db: Path, tmp_path: Path) -> None:
    config = _config(
        tmp_path, small_db, "run", **{"training.max_steps": 5, "training.select_best_by": "transfer"}
    )
    run_dir = pretrain.run(load_pretrain_config(config))
    transfer = _records(run_dir, "transfer")
    assert [r["step"] for r in transfer] == [0, 2, 4, 5]
    for record in transfer:
        assert set(record) == {
            "step",
            "kind",
            "imaging_technique/linear",
            "imaging_technique/knn",
            "mean",
            "seconds",
        }
        assert 0 <= record["imaging_technique/linear"] <= 1 and 0 <= record["imaging_technique/knn"] <= 1
        assert record["mean"] == pytest.approx(
            (record["imaging_technique/linear"] + record["imaging_technique/knn"]) / 2
        )
    means = [r["mean"] for r in transfer]
    best = _best(run_dir)
    assert best["training"]["step"] == transfer[means.index(max(means))]["step"]  # the first of equals
    assert best["metrics"]["transfer_mean"] == max(means)
    assert best["metrics"]["transfer"]["imaging_technique"] == {
        "linear": transfer[means.index(max(means))]["imaging_technique/linear"],
        "knn": transfer[means.index(max(means))]["imaging_technique/knn"],
    }
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("transfer/mean")] == [0, 2, 4, 5]
    assert "transfer/imaging_technique/knn" in events.Tags()["scalars"]


def test_best_is_the_step_of_the_highest_mean_score_not_the_lowest_loss(
    small_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, iter([0.3, 0.8, 0.5, 0.6]))
    settings = {"training.max_steps": 6, "training.val_every_steps": 2, "training.select_best_by": "transfer"}
    run_dir = pretrain.run(load_pretrain_config(_config(tmp_path, small_db, "run", **settings)))
    assert [(r["step"], r["mean"]) for r in _records(run_dir, "transfer")] == [
        (0, 0.3),
        (2, 0.8),
        (4, 0.5),
        (6, 0.6),
    ]
    val = _records(run_dir, "val")
    lowest_loss = min(val, key=lambda r: r["mean_loss"])["step"]
    assert lowest_loss != 2, "the test needs a run whose lowest validation loss is elsewhere"
    best = _best(run_dir)
    assert best["training"]["step"] == 2 and best["metrics"]["transfer_mean"] == 0.8


def test_the_monitor_changes_nothing_of_the_training(small_db: Path, tmp_path: Path) -> None:
    """Same weights after the same steps with and without the monitor (BatchNorm and drop-path:
    a forward pass in train mode, or a draw from the training RNG, would show)."""
    encoder = {"name": "resnet10t", "use_groupnorm": False, "model_kwargs": {"drop_path_rate": 0.2}}
    settings = {"training.max_steps": 4, "model.encoder": encoder}
    with_monitor = pretrain.run(load_pretrain_config(_config(tmp_path, small_db, "on", **settings)))
    off = yaml.safe_load(_config(tmp_path, small_db, "off", **settings).read_text())
    del off["training"]["transfer_monitor"]
    (tmp_path / "off.yaml").write_text(yaml.safe_dump(off))
    without = pretrain.run(load_pretrain_config(tmp_path / "off.yaml"))
    assert len(_records(with_monitor, "transfer")) == 3 and not _records(without, "transfer")
    a, b = _weights(with_monitor / "checkpoints" / "last"), _weights(without / "checkpoints" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # select_best_by: loss (the default) keeps choosing by the validation loss
    val = _records(with_monitor, "val")
    assert _best(with_monitor)["metrics"]["val_mean_loss"] == min(r["mean_loss"] for r in val)


def test_a_resumed_run_keeps_its_best_score(
    small_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the step-2 checkpoint with its best at step 0; the resumed run's later scores
    are lower than that best but would be new bests if the best score were not restored."""
    means = {0: 0.9, 2: 0.3, 4: 0.5, 6: 0.4}
    settings = {"training.max_steps": 6, "training.select_best_by": "transfer"}
    config = _config(tmp_path, small_db, "straight", **settings)
    killed = tmp_path / "killed"
    save = pretrain_job.save_checkpoint

    def copy_at_step_two(
        path: Path, model: Any, config: dict[str, Any], *, trainer_state: Any = None
    ) -> Path:
        saved = save(path, model, config, trainer_state=trainer_state)
        if trainer_state is not None and trainer_state["step"] == 2:  # the folder as a kill now leaves it
            shutil.copytree(tmp_path / "straight", killed)
        return saved

    monkeypatch.setattr(pretrain_job, "save_checkpoint", copy_at_step_two)
    _scripted(monkeypatch, iter(means.values()))
    straight = pretrain.run(load_pretrain_config(config))
    monkeypatch.undo()

    state = json.loads((killed / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["best_transfer"] == 0.9
    _scripted(monkeypatch, iter([means[4], means[6]]))
    resumed_cfg = yaml.safe_load(config.read_text()) | {"run_dir": str(killed)}
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(resumed_cfg))
    resumed = pretrain.run(load_pretrain_config(tmp_path / "killed.yaml"), resume=True)

    assert _records(resumed, "transfer") == _records(straight, "transfer")
    assert [r["step"] for r in _records(resumed, "transfer")] == [0, 2, 4, 6]
    expected, got = _best(straight), _best(resumed)
    assert got["training"]["step"] == expected["training"]["step"] == 0
    assert got["metrics"] == expected["metrics"]
    a, b = _weights(straight / "checkpoints" / "best"), _weights(resumed / "checkpoints" / "best")
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = _weights(straight / "checkpoints" / "last"), _weights(resumed / "checkpoints" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)

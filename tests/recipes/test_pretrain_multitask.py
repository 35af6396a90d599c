"""End-to-end pretraining on real packaged images: learning, exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import yaml

from medfoundry.recipes import pretrain
from medfoundry.recipes.pretrain import job as pretrain_job
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.training.metrics_log import read_metrics
from tests.conftest import tiny_config

pytestmark = pytest.mark.integration


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_three_task_run_lowers_every_task_validation_loss(small_db: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "run", str(small_db), **{"training.max_steps": 24, "training.val_every_steps": 24}
    )
    run_dir = pretrain.run(load_pretrain_config(_write(tmp_path / "c.yaml", cfg)))
    val = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "val"]
    first, last = val[0], val[-1]
    assert first["step"] == 0 and last["step"] == 24
    for task in ("nuclei_seg", "nuclei_det", "imaging_technique"):
        assert last[f"{task}/loss"] < 0.9 * first[f"{task}/loss"], task
    assert last["imaging_technique/accuracy"] > 0.5  # 5 classes: chance is 0.2
    best = json.loads((run_dir / "checkpoints" / "best" / "config.json").read_text())
    assert best["metrics"]["val_mean_loss"] == min(r["mean_loss"] for r in val)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["encoder"]["name"] == "resnet10t"
    assert list((run_dir / "tensorboard").iterdir())


def test_a_tasks_augment_changes_the_runs_for_its_training_samples(
    small_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task of the database can turn the run's flips off for its own training samples (its
    labels name sides), keeping the run's other augmentation; validation is never augmented."""
    from medfoundry.recipes.pretrain import setup

    tasks = yaml.safe_load(small_db.read_text())["tasks"]
    sided = next(t for t in tasks if t["name"] == "imaging_technique")
    sided["augment"] = {"enable_flips": False}
    for task in tasks:
        task["source"]["path"] = str(small_db.parent / task["source"]["path"])
    cfg = tiny_config(
        tmp_path / "run", tasks, **{"training.max_steps": 1, "data.augment": {"affine_degrees": 5}}
    )
    real, seen = setup.TaskDataset, {}

    def spy(records: Any, target: str, size: int, *, augment: Any, **kwargs: Any) -> Any:
        seen[(target, augment.enable_flips, augment.affine_degrees)] = True
        return real(records, target, size, augment=augment, **kwargs)

    monkeypatch.setattr(setup, "TaskDataset", spy)
    pretrain.run(load_pretrain_config(_write(tmp_path / "c.yaml", cfg)))
    assert set(seen) == {
        ("mask", True, 5.0),  # nuclei_seg, training
        ("boxes", True, 5.0),  # nuclei_det
        ("label", False, 5.0),  # imaging_technique: its own flips setting, the run's affine
        ("mask", False, 0.0),  # validation: none
        ("boxes", False, 0.0),
        ("label", False, 0.0),
    }


def _cli(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "medfoundry.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _step_of(checkpoint: Path) -> int:
    try:
        return int(json.loads((checkpoint / "config.json").read_text())["training"]["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def test_resume_after_sigkill_equals_the_uninterrupted_run(small_db: Path, tmp_path: Path) -> None:
    settings = {"training.max_steps": 16, "training.checkpoint_every_steps": 3, "training.val_every_steps": 5}
    # the uninterrupted run, in a fresh process like the others (same threads, same kernels)
    straight = _write(
        tmp_path / "straight.yaml", tiny_config(tmp_path / "straight", str(small_db), **settings)
    )
    assert _cli("pretrain", str(straight)).wait(timeout=300) == 0

    killed_cfg = _write(tmp_path / "killed.yaml", tiny_config(tmp_path / "killed", str(small_db), **settings))
    process = _cli("pretrain", str(killed_cfg))
    last = tmp_path / "killed" / "checkpoints" / "last"
    deadline = time.monotonic() + 120
    while _step_of(last) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed_from = _step_of(last)
    assert 3 <= resumed_from < 16 and resumed_from % 8 != 0, (
        "the kill must land mid-epoch (8 steps per epoch)"
    )

    resumed = _cli("pretrain", "--resume", str(tmp_path / "killed"))
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()  # type: ignore[union-attr]
    a = safetensors.torch.load_file(str(tmp_path / "straight" / "checkpoints" / "last" / "model.safetensors"))
    b = safetensors.torch.load_file(str(last / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    # the logs read as one run too: same validation numbers, no duplicated steps
    val = [
        [r for r in read_metrics(d / "metrics.jsonl") if r["kind"] == "val"]
        for d in (tmp_path / "straight", tmp_path / "killed")
    ]
    assert val[0] == val[1]


def _log_without_timing(run_dir: Path) -> list[dict[str, Any]]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run_dir / "checkpoints" / "last" / "model.safetensors"))


def test_a_run_continues_from_any_state_with_one_command(
    small_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before its first checkpoint, moved and named by a relative path, or simply started
    again with its own command: every run ends with the uninterrupted run's weights and logs."""
    from typer.testing import CliRunner

    from medfoundry.cli.main import app

    settings = {"training.max_steps": 4, "training.checkpoint_every_steps": 2, "training.val_every_steps": 2}
    config = _write(tmp_path / "c.yaml", tiny_config(tmp_path / "straight", str(small_db), **settings))
    step_two = tmp_path / "last_at_step_2"
    save = pretrain_job.save_checkpoint

    def keep_step_two(path: Path, model: Any, config: dict[str, Any], *, trainer_state: Any = None) -> Path:
        saved = save(path, model, config, trainer_state=trainer_state)
        if trainer_state is not None and trainer_state["step"] == 2:
            shutil.copytree(saved, step_two)
        return saved

    monkeypatch.setattr(pretrain_job, "save_checkpoint", keep_step_two)
    straight = pretrain.run(load_pretrain_config(config))
    monkeypatch.undo()
    expected, expected_log = _weights(straight), _log_without_timing(straight)
    runner = CliRunner()

    # killed before the first 'last' checkpoint, then moved, resumed by a relative path
    shutil.copytree(straight, tmp_path / "moved")
    shutil.rmtree(tmp_path / "moved" / "checkpoints" / "last")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["pretrain", "--resume", "moved"])
    assert result.exit_code == 0, result.output
    # killed after the step-2 checkpoint: the command that started it finishes it
    shutil.copytree(straight, tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / "checkpoints" / "last")
    shutil.copytree(step_two, tmp_path / "again" / "checkpoints" / "last")
    cfg = yaml.safe_load(config.read_text())
    again = _write(tmp_path / "again.yaml", {**cfg, "run_dir": str(tmp_path / "again")})
    result = runner.invoke(app, ["pretrain", str(again)])
    assert result.exit_code == 0, result.output

    for run in (tmp_path / "moved", tmp_path / "again"):
        weights = _weights(run)
        assert all(torch.equal(weights[k], expected[k]) for k in expected), run
        assert _log_without_timing(run) == expected_log, run


def test_a_failing_step_still_closes_the_loaders_and_the_metrics_log(
    small_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished: list[Any] = []
    real_finish = pretrain_job._finish

    def finish(r: Any) -> None:
        finished.append(r)
        real_finish(r)

    def failing(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a step failed")

    monkeypatch.setattr(pretrain_job, "_finish", finish)
    monkeypatch.setattr(pretrain_job, "_count_nonfinite", failing)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path / "run", str(small_db))))
    with pytest.raises(RuntimeError, match="a step failed"):
        pretrain.run(load_pretrain_config(tmp_path / "c.yaml"))
    assert len(finished) == 1 and finished[0].metrics_log._file.closed

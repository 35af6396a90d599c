"""Several workers on one study folder: the same results as one worker, a killed worker's cell
redone (not lost, not recorded twice), claims taken over only from workers that are gone, and a
folder that live workers fill with another config refused."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.evaluation.claims import ClaimBoard
from medfoundry.evaluation.study_cells import read_results
from medfoundry.output_folders import write_marker
from medfoundry.recipes import evaluate
from medfoundry.recipes.evaluate import worker as evaluate_worker
from medfoundry.recipes.evaluate.config import StudyConfig
from medfoundry.recipes.evaluate.plan import plan_study
from medfoundry.safe_writes import process_alive
from tests.evaluation.conftest import study_config, tasks_of

pytestmark = pytest.mark.integration


def _config(study_dir: Path, sites_db: Path, checkpoint: Path, **changes: Any) -> dict[str, Any]:
    """A probe study of the sites task: 3 encoders (pixels added) x 2 probes x 2 fractions x 2 seeds."""
    cfg = study_config(study_dir, tasks_of(sites_db), checkpoint, modes=["linear", "knn"])
    return {**cfg, "baselines": ["pixels"], "threads_per_worker": 1, **changes}


@pytest.fixture(scope="module")
def one_worker(
    sites_db: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    study = tmp_path_factory.mktemp("one") / "study"
    return read_results(
        evaluate.run(StudyConfig.model_validate(_config(study, sites_db, checkpoint))) / "results.csv"
    )


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal rows, NaN equal to NaN."""
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(x[k] == y[k] or (x[k] != x[k] and y[k] != y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def _workers(study: Path) -> set[int]:
    return {json.loads(p.read_text())["worker"]["pid"] for p in (study / "cells").glob("*.json")}


def test_two_workers_give_the_results_of_one(
    sites_db: Path, checkpoint: Path, tmp_path: Path, one_worker: list[dict[str, Any]], monkeypatch: Any
) -> None:
    study = tmp_path / "study"
    real = evaluate_worker.run_probe_cell

    def patient(*args: Any, **kwargs: Any) -> Any:
        # this process waits for the second worker's first cell, so both surely share the work
        deadline = time.monotonic() + 120
        while len(_workers(study) - {os.getpid()}) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_worker, "run_probe_cell", patient)
    result = evaluate.run(StudyConfig.model_validate(_config(study, sites_db, checkpoint, workers=2)))
    assert len(_workers(study)) == 2, "both workers ran cells"
    assert len(list((study / "cells").glob("*.json"))) == 3 * 2 * 2 * 2  # every cell once
    assert _same(read_results(result / "results.csv"), one_worker)
    assert not list((study / "claims").glob("*.claim")), "every claim released"


def _hanging_worker(config: dict[str, Any], marker: str) -> None:
    """A worker that claims its first cell, says which one, and hangs inside it."""
    from medfoundry.recipes.evaluate import worker

    def hang(cell: Any, *args: Any, **kwargs: Any) -> Any:
        Path(marker).write_text(cell.id)
        time.sleep(600)

    worker.run_probe_cell = hang  # type: ignore[assignment]
    worker.work(plan_study(StudyConfig.model_validate(config)), show_progress=False)


def test_a_killed_worker_leaves_its_cell_to_be_redone(
    sites_db: Path, checkpoint: Path, tmp_path: Path, one_worker: list[dict[str, Any]], monkeypatch: Any
) -> None:
    study = tmp_path / "study"
    config = StudyConfig.model_validate(_config(study, sites_db, checkpoint)).model_dump(mode="json")
    study.mkdir()
    write_marker(study, "evaluate")  # as the run that started this worker marked it
    marker = tmp_path / "claimed"
    process = multiprocessing.get_context("spawn").Process(target=_hanging_worker, args=(config, str(marker)))
    process.start()
    deadline = time.monotonic() + 180
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the worker never reached a cell"
    os.kill(process.pid, signal.SIGKILL)  # mid-cell: no chance to clean up
    process.join()
    killed = marker.read_text()
    claim = json.loads((study / "claims" / f"{killed}.claim").read_text())
    assert claim["pid"] == process.pid and not (study / "cells" / f"{killed}.json").exists()

    ran: list[str] = []
    real = evaluate_worker.run_probe_cell
    monkeypatch.setattr(
        evaluate_worker, "run_probe_cell", lambda cell, *a, **k: ran.append(cell.id) or real(cell, *a, **k)
    )
    evaluate.run(StudyConfig.model_validate(config))
    assert killed in ran and len(ran) == len(set(ran)) == 24  # redone, and nothing twice
    assert _same(read_results(study / "results.csv"), one_worker)
    assert not list((study / "claims").glob("*"))


def _watched_child(pid_file: str) -> None:
    evaluate_worker.stop_with_parent()
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)  # a long cell


def _parent_of_a_worker(pid_file: str) -> None:
    child = multiprocessing.get_context("spawn").Process(target=_watched_child, args=(pid_file,))
    child.start()
    child.join()


def test_workers_stop_when_the_study_process_is_killed(tmp_path: Path) -> None:
    """A `--workers N` study killed from outside (SIGKILL, or SIGTERM from a scheduler) cannot stop
    its workers itself: they must not go on through the whole study on their own."""
    pid_file = tmp_path / "worker.pid"
    parent = multiprocessing.get_context("spawn").Process(target=_parent_of_a_worker, args=(str(pid_file),))
    parent.start()
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_file.exists(), "the worker never started"
    worker = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.join()
    deadline = time.monotonic() + 30
    while process_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(worker), "the worker outlived the study process"


def test_claims_are_taken_over_only_from_workers_that_are_gone(tmp_path: Path) -> None:
    board = ClaimBoard(tmp_path, timeout_s=60)

    def claim(name: str, host: str, pid: int, age_s: float = 0.0) -> None:
        path = tmp_path / f"{name}.claim"
        path.write_text(json.dumps({"host": host, "pid": pid, "token": "t", "time": 0}))
        os.utime(path, (time.time() - age_s, time.time() - age_s))

    claim("remote-live", "node-7", 123)
    claim("remote-silent", "node-7", 123, age_s=3600)  # its heartbeat stopped an hour ago
    dead = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    claim("local-dead", socket.gethostname(), dead.pid or 0)
    claim("local-live", socket.gethostname(), os.getppid())
    assert board.live_claims() == ["local-live", "remote-live"]
    assert not board.try_claim("remote-live") and not board.try_claim("local-live")
    assert board.try_claim("remote-silent") and board.try_claim("local-dead")
    assert json.loads((tmp_path / "local-dead.claim").read_text())["pid"] == os.getpid()
    assert not ClaimBoard(tmp_path).try_claim("local-dead")  # now held by a live worker
    board.release("local-dead")
    assert not (tmp_path / "local-dead.claim").exists() and (tmp_path / "remote-silent.claim").exists()


def test_workers_on_a_folder_of_another_config_exit_2(
    sites_db: Path, checkpoint: Path, tmp_path: Path
) -> None:
    study = tmp_path / "study"
    first = StudyConfig.model_validate(_config(study, sites_db, checkpoint))
    study.mkdir()
    write_marker(study, "evaluate")  # another job's study, running
    (study / "study.yaml").write_text(yaml.safe_dump(plan_study(first).cfg.model_dump(mode="json")))
    (study / "claims").mkdir()
    live = {"host": socket.gethostname(), "pid": os.getpid(), "token": "t", "time": time.time()}
    (study / "claims" / "some-cell.claim").write_text(json.dumps(live))  # a worker busy right now
    before = sorted(p.name for p in study.rglob("*"))
    other = _config(study, sites_db, checkpoint, fractions=[0.5, 1.0], workers=2)
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "other.yaml"), "--workers", "2"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: study_dir: ") and "differs in: fractions;" in lines[0]
    )
    assert sorted(p.name for p in study.rglob("*")) == before, "nothing written"

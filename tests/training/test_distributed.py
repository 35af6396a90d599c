"""Multi-process training with gloo on the CPU: same weights as one process, resume, failures."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import yaml

from tests.conftest import tiny_config

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _classification_tasks(small_db: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """Two classification tasks on real images; their losses are means over images, so a batch
    split across processes gives exactly the mean gradient of the whole batch."""
    rows = list(csv.DictReader((small_db.parent / "nuclei_det.csv").open()))
    with (tmp_path / "density.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label", "split"])
        writer.writeheader()
        for row in rows:  # label derived from the nuclei boxes: 3 or more nuclei in the tile is "dense"
            dense = len(json.loads(row["boxes"])) >= 3
            writer.writerow(
                {
                    "image": str(small_db.parent / row["image"]),
                    "label": "dense" if dense else "sparse",
                    "split": row["split"],
                }
            )
    return [
        {
            "name": "imaging_technique",
            "type": "classification",
            "source": {"path": str(small_db.parent / "imaging_technique.csv")},
            "classes": ["fundus", "immunohistochemistry", "phase_contrast", "h_and_e", "fluorescence"],
        },
        {
            "name": "density",
            "type": "classification",
            "classes": ["sparse", "dense"],
            "source": {"path": str(tmp_path / "density.csv")},
        },
    ]


def _config(tmp_path: Path, name: str, tasks: list[dict[str, Any]] | str, **overrides: Any) -> Path:
    cfg = tiny_config(
        tmp_path / name, tasks, **{"training.max_steps": 4, "training.distributed_timeout_s": 60, **overrides}
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(nproc: int, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={_free_port()}",
        "-m",
        "medfoundry.cli.main",
        *args,
    ]
    return subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def _output(process: subprocess.Popen[bytes]) -> str:
    return process.stdout.read().decode() if process.stdout else ""


def test_two_processes_end_with_the_weights_of_one(small_db: Path, tmp_path: Path) -> None:
    tasks = _classification_tasks(small_db, tmp_path)
    single = subprocess.run(
        [sys.executable, "-m", "medfoundry.cli.main", "pretrain", str(_config(tmp_path, "one", tasks))],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr
    pair = _torchrun(2, "pretrain", str(_config(tmp_path, "two", tasks)))
    assert pair.wait(timeout=300) == 0, _output(pair)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    # relative difference of the whole weight vector: float sums in another order differ by ~1e-8,
    # and AdamW turns that into lr-sized steps on weights whose gradient is about zero, so single
    # elements can differ by more while the weights as a whole agree
    difference = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    assert difference / torch.cat([a[k].flatten() for k in a]).norm() <= 1e-5
    train = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train if r["kind"] == "train"] == [1, 2, 3, 4]  # written once, by rank 0


def test_a_killed_two_process_run_resumes_with_one_process(small_db: Path, tmp_path: Path) -> None:
    tasks = _classification_tasks(small_db, tmp_path)
    config = _config(
        tmp_path, "run", tasks, **{"training.max_steps": 40, "training.checkpoint_every_steps": 2}
    )
    pair = _torchrun(2, "pretrain", str(config))
    last = tmp_path / "run" / "checkpoints" / "last" / "config.json"
    deadline = time.monotonic() + 240
    while not last.exists() and pair.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_tree(pair.pid)  # like a node that dies: the launcher and every worker at once
    pair.wait()
    step = json.loads(last.read_text())["training"]["step"]
    assert 2 <= step < 40
    resumed = subprocess.run(
        [sys.executable, "-m", "medfoundry.cli.main", "pretrain", "--resume", str(tmp_path / "run")],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(last.read_text())["training"]["step"] == 40


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (torchrun starts workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _rank(rank: int, port: int, config: Path) -> subprocess.Popen[bytes]:
    env = _env(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    return subprocess.Popen(
        [sys.executable, "-m", "medfoundry.cli.main", "pretrain", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_a_rank_that_dies_ends_the_other_with_a_message(small_db: Path, tmp_path: Path) -> None:
    tasks = _classification_tasks(small_db, tmp_path)
    config = _config(
        tmp_path, "run", tasks, **{"training.max_steps": 200, "training.distributed_timeout_s": 30}
    )
    port = _free_port()
    ranks = [_rank(0, port, config), _rank(1, port, config)]
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and '"train"' in metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    ranks[1].kill()
    started = time.monotonic()
    code = ranks[0].wait(timeout=120)
    output = _output(ranks[0])
    assert code == 1, output
    assert "rank 0 of 2: a collective operation failed" in output
    assert time.monotonic() - started < 60


def test_a_missing_process_is_a_clear_error_not_a_hang(small_db: Path, tmp_path: Path) -> None:
    tasks = _classification_tasks(small_db, tmp_path)
    config = _config(tmp_path, "run", tasks, **{"training.distributed_timeout_s": 5})
    alone = _rank(0, _free_port(), config)
    code = alone.wait(timeout=120)
    output = _output(alone)
    assert code == 2, output
    assert "could not join the 2 processes at 127.0.0.1" in output
    assert not (tmp_path / "run").exists()


def test_masked_image_tasks_train_under_two_processes(small_db: Path, tmp_path: Path) -> None:
    """A hybrid run (labelled tasks + masked-image modelling) under torchrun, gloo on the CPU."""
    config = _config(
        tmp_path,
        "hybrid",
        str(small_db.parent / "tasks.yaml"),
        **{
            "training.max_steps": 3,
            "model.masked_image": {"decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
        },
    )
    pair = _torchrun(2, "pretrain", str(config))
    assert pair.wait(timeout=300) == 0, _output(pair)
    val = [json.loads(line) for line in (tmp_path / "hybrid" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in val if r["kind"] == "val"][-1]
    assert last["step"] == 3 and all(
        f"{t}/loss" in last for t in ("nuclei_seg", "nuclei_det", "imaging_technique", "all_images")
    )
    assert (tmp_path / "hybrid" / "previews" / "all_images").is_dir()


def test_the_transfer_monitor_scores_on_rank_0_while_the_other_waits(small_db: Path, tmp_path: Path) -> None:
    """Rank 0 alone holds the held-out images, scores them and keeps ``best``; rank 1 goes on to
    the next step's collectives and waits there: no hang, each score logged once."""
    tasks = _classification_tasks(small_db, tmp_path)
    monitor = {"tasks": tasks, "task_names": ["density"], "every_steps": 2, "max_images": 40}
    config = _config(
        tmp_path,
        "two",
        tasks,
        **{
            "training.max_steps": 3,
            "training.transfer_monitor": monitor,
            "training.select_best_by": "transfer",
        },
    )
    pair = _torchrun(2, "pretrain", str(config))
    assert pair.wait(timeout=300) == 0, _output(pair)
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    transfer = [r for r in records if r["kind"] == "transfer"]
    assert [r["step"] for r in transfer] == [0, 2, 3]
    means = [r["mean"] for r in transfer]
    best = json.loads((tmp_path / "two" / "checkpoints" / "best" / "config.json").read_text())
    assert best["training"]["step"] == transfer[means.index(max(means))]["step"]

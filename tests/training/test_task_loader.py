from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medfoundry.data import Record, TaskDataset
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training import CyclicTaskLoader, RoundRobinSampler, TaskCollate


def _loader(tmp_path: Path, n: int, name: str, start: int = 0, workers: int = 0) -> CyclicTaskLoader:
    records = []
    for i in range(n):
        path = tmp_path / f"{name}_{i}.png"
        if not path.exists():
            Image.fromarray(np.full((4, 4), i * 10, np.uint8)).save(path)
        records.append(Record(path, "train", i, label=i % 2))
    task = build_task(
        TaskSpec(name=name, type="classification", classes=["a", "b"], source={"path": "x.csv"})
    )
    dataset = TaskDataset(records, "label", 4, augment=True)
    return CyclicTaskLoader(
        name, dataset, TaskCollate(name, task), 3, seed=1, num_workers=workers, start_batch=start
    )


def _ids(batch: object) -> list[int]:
    return [round(v * 255 / 10) for v in batch.images[:, 0, 0, 0].tolist()]  # type: ignore[attr-defined]


def test_each_pass_visits_every_sample_once_in_a_new_order(tmp_path: Path) -> None:
    loader = _loader(tmp_path, 7, "t")
    assert loader.batches_per_pass == 3
    passes = [[i for _ in range(3) for i in _ids(loader.next_batch())] for _ in range(2)]
    assert sorted(passes[0]) == sorted(passes[1]) == list(range(7))
    assert passes[0] != passes[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_starting_at_a_batch_continues_exactly(tmp_path: Path, workers: int) -> None:
    full = _loader(tmp_path, 7, "t")
    batches = [full.next_batch() for _ in range(8)]
    resumed = _loader(tmp_path, 7, "t", start=5, workers=workers)
    for expected in batches[5:]:
        got = resumed.next_batch()
        assert torch.equal(got.images, expected.images) and torch.equal(got.targets, expected.targets)
    resumed.close()


def test_round_robin_epoch_follows_the_largest_task(tmp_path: Path) -> None:
    small, large = _loader(tmp_path, 2, "small"), _loader(tmp_path, 10, "large")
    sampler = RoundRobinSampler({"small": small, "large": large})
    assert sampler.rounds_per_epoch == 4 and sampler.steps_per_epoch == 4
    steps = [list(sampler.next_step()) for _ in range(4)]
    assert all([b.task for b in step] == ["small", "large"] for step in steps)
    assert sampler.state() == {"small": 4, "large": 4}  # the small task restarted 3 times
    assert RoundRobinSampler({"small": small, "large": large}, rounds_per_step=3).steps_per_epoch == 2

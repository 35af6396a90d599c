from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medfoundry.data import Record, TaskDataset
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training import CyclicTaskLoader, RoundRobinSampler, TaskCollate


def _loader(
    tmp_path: Path,
    n: int,
    name: str,
    start: int = 0,
    workers: int = 0,
    batch: int = 3,
    rank: int = 0,
    world: int = 1,
) -> CyclicTaskLoader:
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
        name,
        dataset,
        TaskCollate(name, task),
        batch_size=batch,
        seed=1,
        num_workers=workers,
        start_batch=start,
        rank=rank,
        world_size=world,
    )


def _ids(batch: object) -> list[int]:
    return [round(v * 255 / 10) for v in batch.images[:, 0, 0, 0].tolist()]  # type: ignore[attr-defined]


def test_batches_are_full_and_each_pass_visits_every_sample_once(tmp_path: Path) -> None:
    loader = _loader(tmp_path, 7, "t")
    assert loader.batches_per_pass == 3
    batches = [_ids(loader.next_batch()) for _ in range(7)]  # 21 samples: exactly 3 passes
    assert all(len(b) == 3 for b in batches)
    stream = [i for b in batches for i in b]
    passes = [stream[0:7], stream[7:14], stream[14:21]]
    assert all(sorted(p) == list(range(7)) for p in passes)
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


def test_ranks_split_each_global_batch_into_equal_slices(tmp_path: Path) -> None:
    single = _loader(tmp_path, 9, "t", batch=4)
    ranks = [_loader(tmp_path, 9, "t", batch=4, rank=r, world=2) for r in range(2)]
    for _ in range(5):
        whole = single.next_batch()
        parts = [loader.next_batch() for loader in ranks]
        assert [len(p) for p in parts] == [2, 2]
        assert torch.equal(torch.cat([p.images for p in parts]), whole.images)
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        _loader(tmp_path, 9, "t", batch=4, world=3)

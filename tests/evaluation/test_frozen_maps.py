"""A frozen encoder's maps computed once per distinct image: the same training, less arithmetic."""

from __future__ import annotations

import importlib
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

from medfoundry.evaluation.finetune import FinetuneConfig, finetune
from medfoundry.evaluation.frozen_maps import memoized_maps
from medfoundry.evaluation.pretrained_encoder import load_encoder
from tests.evaluation.test_finetune import _task

finetune_module = importlib.import_module("medfoundry.evaluation.finetune")


class _Counting(nn.Module):
    """Two pyramid levels of a fixed conv; counts the images it computes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.computed = 0

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.computed += len(images)
        x = self.conv(images)
        return [x, nn.functional.avg_pool2d(x, 2)]


def test_each_distinct_image_is_computed_once_and_looked_up_after() -> None:
    encoder = _Counting().eval().requires_grad_(False)
    images = torch.rand(4, 3, 8, 8)
    expected = encoder(images)
    encoder.computed = 0
    with memoized_maps(encoder) as cache:
        first = encoder(images[[0, 1, 1]])  # a repeat inside a batch is computed once
        second = encoder(images[[3, 1, 0, 2]])
    assert encoder.computed == 4 and len(cache) == 4
    for got, rows in ((first, [0, 1, 1]), (second, [3, 1, 0, 2])):
        for level, want in zip(got, expected, strict=True):
            torch.testing.assert_close(level, want[rows])
    encoder(images)  # the block restored the class's own forward
    assert encoder.computed == 8


def test_a_full_cache_computes_what_it_cannot_hold() -> None:
    encoder = _Counting().eval().requires_grad_(False)
    images = torch.rand(3, 3, 8, 8)
    one_image = (4 * 8 * 8 + 4 * 4 * 4) * 4  # both levels, float32
    with memoized_maps(encoder, max_bytes=2 * one_image) as cache:
        encoder(images)
        encoder(images)
    assert len(cache) == 2 and encoder.computed == 3 + 1


@pytest.mark.parametrize("trainable", [True, False])
def test_an_encoder_that_can_change_is_refused(trainable: bool) -> None:
    encoder = _Counting().requires_grad_(trainable)
    if not trainable:
        encoder.train()
    with pytest.raises(ValueError, match="frozen encoder"), memoized_maps(encoder):
        pass


@pytest.mark.integration
def test_a_frozen_decoder_trains_the_same_with_and_without_the_cache(
    checkpoint: Path, small_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real nuclei tiles, flips on: the memo changes the cost of a frozen-decoder cell, not its
    result (the same decoder weights and validation curve)."""
    spec, task, splits = _task(small_db, "nuclei_seg")
    cfg = FinetuneConfig(
        max_steps=12, eval_every_steps=4, batch_size=4, pixel_decoder={"channels": 16, "embed_dim": 8}
    )

    def run() -> tuple[dict[str, torch.Tensor], list[tuple[int, float]]]:
        result = finetune(
            load_encoder(checkpoint),
            spec.name,
            task,
            train=splits["train"][:6],
            val=splits["val"],
            metric="mean_dice",
            cfg=cfg,
            freeze_encoder=True,
            seed=0,
        )
        return result.model.state_dict(), result.curve

    cached_weights, cached_curve = run()
    monkeypatch.setattr(finetune_module, "memoized_maps", lambda encoder: nullcontext())
    weights, curve = run()
    assert [s for s, _ in cached_curve] == [s for s, _ in curve]
    assert [v for _, v in cached_curve] == pytest.approx([v for _, v in curve], abs=1e-4)
    for key, value in weights.items():
        torch.testing.assert_close(cached_weights[key], value, rtol=1e-4, atol=1e-5)

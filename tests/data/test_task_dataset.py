from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medfoundry.data import Box, Record, TaskDataset


def _asymmetric_image(path: Path) -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    image[2:6, 1:5] = 255  # a bright square in the top-left corner
    Image.fromarray(image).save(path)


def test_flips_move_image_mask_and_boxes_together(tmp_path: Path) -> None:
    _asymmetric_image(tmp_path / "a.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 1:5] = 1
    Image.fromarray(mask).save(tmp_path / "m.png")
    seg = TaskDataset(
        [Record(tmp_path / "a.png", "train", 2, mask=tmp_path / "m.png")], "mask", 16, augment=True
    )
    det = TaskDataset(
        [Record(tmp_path / "a.png", "train", 2, boxes=(Box(1, 2, 5, 6, 0),))], "boxes", 16, augment=True
    )
    flipped_some = False
    for seed in range(8):
        image, target = seg[(0, seed)]
        np.testing.assert_array_equal((image[0] > 0.5).numpy(), target.numpy() == 1)
        image, target = det[(0, seed)]
        x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
        bright = (image[0] > 0.5).nonzero()
        assert (bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1) == (
            x1,
            y1,
            x2,
            y2,
        )
        flipped_some |= x1 != 1 or y1 != 2
    assert flipped_some


def test_augmentation_depends_only_on_the_sample_seed(tmp_path: Path) -> None:
    _asymmetric_image(tmp_path / "a.png")
    ds = TaskDataset([Record(tmp_path / "a.png", "train", 2, label=0)], "label", 8, augment=True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = [ds[(0, s)][0] for s in range(6)]
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    second = [ds[(0, s)][0] for s in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert len({tuple(a.flatten().tolist()) for a in first}) > 1


def test_resize_scales_boxes_and_drops_degenerate_ones(tmp_path: Path) -> None:
    _asymmetric_image(tmp_path / "a.png")
    record = Record(tmp_path / "a.png", "val", 2, boxes=(Box(0, 0, 8, 8, 0), Box(4, 4, 4.2, 4.2, 0)))
    image, target = TaskDataset([record], "boxes", 32, augment=False)[0]
    assert image.shape == (3, 32, 32)
    assert target["boxes"].tolist() == [[0.0, 0.0, 16.0, 16.0]] and target["labels"].tolist() == [0]

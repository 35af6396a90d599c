from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medfoundry.data import (
    AugmentConfig,
    Box,
    CacheSettings,
    Preprocessing,
    Record,
    TaskDataset,
    prepare_arrays,
)


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


def _cached(records: list[Record], target: str, size: int, tmp_path: Path) -> TaskDataset:
    prepared = prepare_arrays(
        "t-train",
        records,
        target,
        size=size,
        preprocessing=Preprocessing(),
        num_classes=2,
        ignore_index=255,
        cache=CacheSettings(tmp_path / "c"),
    )  # type: ignore[arg-type]
    return TaskDataset(prepared.records, target, size, augment=AugmentConfig.off(), arrays=prepared.arrays)  # type: ignore[arg-type]


def test_cached_samples_equal_decoded_ones_up_to_8_bit_rounding(tmp_path: Path) -> None:
    _asymmetric_image(tmp_path / "a.png")
    records = [Record(tmp_path / "a.png", "train", 2, label=1)]
    cached_image, label = _cached(records, "label", 24, tmp_path)[0]
    decoded_image, _ = TaskDataset(records, "label", 24, augment=False)[0]
    assert label == 1 and cached_image.shape == decoded_image.shape == (3, 24, 24)
    assert (cached_image - decoded_image).abs().max() <= 0.5 / 255 + 1e-6


def test_rotations_affine_and_crops_keep_masks_aligned_and_boxes_valid(tmp_path: Path) -> None:
    _asymmetric_image(tmp_path / "a.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 1:5] = 1
    Image.fromarray(mask).save(tmp_path / "m.png")
    rotate = AugmentConfig(enable_rotate90=True)
    seg = TaskDataset(
        [Record(tmp_path / "a.png", "train", 2, mask=tmp_path / "m.png")], "mask", 16, augment=rotate
    )
    corners = set()
    for seed in range(12):
        image, target = seg[(0, seed)]
        np.testing.assert_array_equal((image[0] > 0.5).numpy(), target.numpy() == 1)
        corners.add(tuple((target == 1).nonzero()[0].tolist()))
    assert len(corners) >= 3  # the square visited several corners
    heavy = AugmentConfig(
        enable_rotate90=True,
        affine_degrees=20,
        affine_translate=0.1,
        affine_scale=0.2,
        crop_min_scale=0.3,
        intensity_jitter=0.3,
    )
    det = TaskDataset(
        [Record(tmp_path / "a.png", "train", 2, boxes=(Box(1, 2, 5, 6, 0), Box(10, 10, 16, 16, 0)))],
        "boxes",
        16,
        augment=heavy,
    )
    for seed in range(30):
        image, target = det[(0, seed)]
        assert image.shape == (3, 16, 16) and 0 <= image.min() and image.max() <= 1
        boxes = target["boxes"]
        assert len(boxes) == len(target["labels"]) <= 2
        assert ((boxes >= 0) & (boxes <= 16)).all() and (boxes[:, 2:] - boxes[:, :2] >= 1).all()


def test_image_and_multilabel_targets(tmp_path: Path) -> None:
    _asymmetric_image(tmp_path / "a.png")
    image, target = TaskDataset([Record(tmp_path / "a.png", None, 2)], "image", 8, augment=True)[(0, 3)]
    assert image.shape == (3, 8, 8) and target is None
    _, labels = TaskDataset(
        [Record(tmp_path / "a.png", None, 2, labels=(1.0, float("nan")))], "multilabel", 8, augment=False
    )[0]
    assert labels[0] == 1.0 and torch.isnan(labels[1])

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.models.detection_decoder import DetectionFeatures, FCOSDecoder
from medfoundry.tasks import DetectionTask, TaskSpec

RESNET = ([64, 128, 256, 512], [4, 8, 16, 32])
VIT_SIMPLE_PYRAMID = ([96, 192, 384, 768], [4, 8, 16, 32])


def encoder_maps(
    in_channels: list[int], in_strides: list[int], size: int, batch: int = 1
) -> list[torch.Tensor]:
    return [
        torch.randn(batch, c, math.ceil(size / s), math.ceil(size / s))
        for c, s in zip(in_channels, in_strides, strict=True)
    ]


def detection_task(num_classes: int = 2) -> DetectionTask:
    classes = [f"c{i}" for i in range(num_classes)]
    return DetectionTask(TaskSpec(name="cells", type="detection", classes=classes, source={"path": "c.csv"}))


@pytest.mark.parametrize("pyramid", [RESNET, VIT_SIMPLE_PYRAMID], ids=["resnet", "vit-simple-pyramid"])
@pytest.mark.parametrize("size", [128, 64, 32])
def test_outputs_match_declared_strides_and_channels(pyramid: tuple[list[int], list[int]], size: int) -> None:
    decoder = FCOSDecoder(*pyramid, channels=32)
    assert decoder.strides == (8, 16, 32, 64, 128) and decoder.out_channels == 32
    out = decoder(encoder_maps(*pyramid, size=size, batch=2))
    assert isinstance(out, DetectionFeatures) and out.strides == decoder.strides
    for feats in (out.cls_feats, out.box_feats):
        # P7 of a 64 px (or 32 px) image is 1x1: stride-2 convs of a 1x1 map stay 1x1
        expected = [
            (2, 32, max(1, math.ceil(size / s)), max(1, math.ceil(size / s))) for s in decoder.strides
        ]
        assert [tuple(f.shape) for f in feats] == expected


def test_fewer_levels_drop_the_coarsest() -> None:
    decoder = FCOSDecoder(*RESNET, channels=16, num_levels=3)
    assert decoder.strides == (8, 16, 32)
    assert [tuple(f.shape[-2:]) for f in decoder(encoder_maps(*RESNET, size=64)).cls_feats] == [
        (8, 8),
        (4, 4),
        (2, 2),
    ]
    assert not any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in decoder.modules())


def test_encoder_levels_replace_extra_convs() -> None:
    channels, strides = [32, 64, 64, 64, 64], [4, 8, 16, 32, 64]
    decoder = FCOSDecoder(channels, strides, channels=16)
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in decoder.modules()) == 1
    assert [f.shape[-1] for f in decoder(encoder_maps(channels, strides, size=128)).box_feats] == [
        16,
        8,
        4,
        2,
        1,
    ]


@pytest.mark.parametrize(("channels", "groups"), [(256, 32), (64, 8), (48, 6), (16, 2), (4, 1)])
def test_uses_group_norm_of_at_least_8_channels_per_group(channels: int, groups: int) -> None:
    decoder = FCOSDecoder(*RESNET, channels=channels)
    norms = [m for m in decoder.modules() if isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm)]
    assert norms and all(isinstance(m, nn.GroupNorm) and m.num_groups == groups for m in norms)


@pytest.mark.parametrize(
    ("in_channels", "in_strides", "match"),
    [
        ([384, 384, 384], [16, 16, 16], "stride-8 map"),
        ([64, 128, 256], [4, 8, 32], r"strides \[8, 16\]"),
        ([64, 128], [4, 8, 16], "2 in_channels"),
    ],
)
def test_unusable_pyramids_are_config_errors(
    in_channels: list[int], in_strides: list[int], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        FCOSDecoder(in_channels, in_strides)


def test_more_than_five_levels_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"1 <= num_levels <= 5"):
        FCOSDecoder(*RESNET, num_levels=6)


def test_wrong_number_of_maps_names_the_shapes() -> None:
    decoder = FCOSDecoder(*RESNET, channels=16)
    with pytest.raises(ValueError, match=r"built for 4 encoder maps, got 3 of shapes \[\(1, 64, 16, 16\)"):
        decoder(encoder_maps(*RESNET, size=64)[:3])


def test_two_tasks_share_the_decoder() -> None:
    decoder = FCOSDecoder(*RESNET, channels=16)
    feats = decoder(encoder_maps(*RESNET, size=64))
    one, three = detection_task(1).build_head(16), detection_task(3).build_head(16)
    assert one(feats).cls_logits[0].shape[1] == 1 and three(feats).cls_logits[0].shape[1] == 3


def test_gradient_reaches_every_decoder_and_head_parameter() -> None:
    torch.manual_seed(0)
    task = detection_task(2)
    decoder = FCOSDecoder(*RESNET, channels=16)
    head = task.build_head(decoder.out_channels)
    maps = [m.requires_grad_() for m in encoder_maps(*RESNET, size=128, batch=2)]
    targets = [
        {
            "boxes": torch.tensor([[8.0, 10.0, 50.0, 40.0], [20.0, 16.0, 120.0, 110.0]]),
            "labels": torch.tensor([0, 1]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    task.loss(head(decoder(maps)), targets).backward()
    for name, param in [*decoder.named_parameters(), *head.named_parameters()]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert maps[1].grad is not None and maps[1].grad.abs().sum() > 0  # and on into the encoder


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    task = detection_task(2)
    decoder = FCOSDecoder([32, 32, 32], [8, 16, 32], channels=32, num_convs=1, num_levels=4)
    head = task.build_head(decoder.out_channels)
    maps = encoder_maps([32, 32, 32], [8, 16, 32], size=64, batch=2)
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 30.0, 28.0], [30.0, 20.0, 62.0, 60.0]]),
            "labels": torch.tensor([0, 1]),
        },
        {"boxes": torch.tensor([[10.0, 30.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
    ]
    optimizer = torch.optim.AdamW([*decoder.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(40):
        loss = task.loss(head(decoder(maps)), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]  # about 1 -> 0.1 in practice

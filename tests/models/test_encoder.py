from __future__ import annotations

import pytest
import torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.models import create_encoder

ENCODERS = [
    ("resnet10t", {}),
    ("convnext_atto", {}),
    ("swin_tiny_patch4_window7_224", {"img_size": 64, "model_kwargs": {"window_size": 4}}),
    ("vit_tiny_patch16_224", {"img_size": 64}),
]


@pytest.mark.parametrize(("name", "kwargs"), ENCODERS, ids=[n for n, _ in ENCODERS])
def test_feature_info_matches_the_nchw_outputs(name: str, kwargs: dict[str, object]) -> None:
    encoder = create_encoder(name, **kwargs)  # type: ignore[arg-type]
    features = encoder(torch.rand(2, 3, 64, 64))
    assert [f.stride for f in encoder.feature_info] == [4, 8, 16, 32]
    for feature, level in zip(features, encoder.feature_info, strict=True):
        assert feature.shape == (2, level.channels, int(64 / level.stride), int(64 / level.stride))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in encoder.modules())


def test_input_normalisation_happens_inside() -> None:
    encoder = create_encoder("resnet10t").eval()
    x = torch.rand(1, 3, 32, 32)
    normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    direct = encoder.backbone.forward_intermediates(
        normalised, indices=encoder.indices, intermediates_only=True
    )
    assert torch.allclose(encoder(x)[-1], direct[-1])


def test_batchnorm_becomes_groupnorm_keeping_affine_weights() -> None:
    encoder = create_encoder("resnet10t")
    norm = encoder.backbone.bn1
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 32
    kept = create_encoder("resnet10t", use_groupnorm=False)
    assert isinstance(kept.backbone.bn1, nn.BatchNorm2d)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet181'; did you mean 'resnet18'"):
        create_encoder("resnet181")


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="does not accept these arguments"):
        create_encoder("resnet10t", model_kwargs={"wingspan": 3})


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    x = torch.rand(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        torch.manual_seed(0)
        encoder = create_encoder("resnet10t", use_grad_checkpointing=enable)
        encoder(x)[-1].sum().backward()
        grads.append(encoder.backbone.conv1[0].weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)

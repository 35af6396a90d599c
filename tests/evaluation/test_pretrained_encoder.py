"""Encoders on equal footing: checkpoints, timm models and random weights; errors before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medfoundry
from medfoundry.errors import ConfigError
from medfoundry.evaluation.pretrained_encoder import load_encoder, weights_sha256
from medfoundry.training.model_loading import load_multitask_model


def test_checkpoint_encoder_embeds_like_the_multitask_model(checkpoint: Path) -> None:
    encoder = load_encoder(checkpoint)
    model, config = load_multitask_model(checkpoint)
    images = torch.rand(3, 3, 32, 32)
    assert torch.allclose(encoder.embed(images), model.embed(images))
    assert encoder.image_size == config["model"]["image_size"] == 32
    assert (
        encoder.config.name == "resnet10t" and encoder.config.use_groupnorm and not encoder.config.pretrained
    )


def test_random_weights_keep_the_architecture(checkpoint: Path) -> None:
    trained, random = load_encoder(checkpoint), load_encoder(checkpoint, pretrained=False)
    shapes = {k: v.shape for k, v in trained.state_dict().items()}
    assert {k: v.shape for k, v in random.state_dict().items()} == shapes
    assert random.weights_sha256 != trained.weights_sha256
    assert load_encoder(checkpoint, pretrained=False).weights_sha256 == random.weights_sha256  # seeded
    assert load_encoder(checkpoint, pretrained=False, seed=1).weights_sha256 != random.weights_sha256
    state = torch.random.get_rng_state()
    load_encoder("resnet10t", pretrained=False, image_size=32)
    assert torch.equal(state, torch.random.get_rng_state()), "loading must not move the caller's RNG"


def test_timm_encoder_keeps_batchnorm_for_imagenet_statistics() -> None:
    encoder = load_encoder("resnet10t", pretrained=False, image_size=32)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    assert tuple(encoder.embed(torch.rand(2, 3, 32, 32)).shape) == (2, encoder.out_channels) == (2, 512)
    assert weights_sha256(encoder.encoder) == encoder.weights_sha256


def test_timm_pretrained_offline_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what no network looks like
    with pytest.raises(ConfigError) as error:
        load_encoder("resnet10t", pretrained=True, image_size=32)
    (line,) = error.value.problems
    assert "encoder 'resnet10t' (pretrained=True)" in line
    assert "could not load pretrained weights" in line and "internet access" in line and "\n" not in line


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("resnet181", r"unknown timm model 'resnet181'; did you mean 'resnet18'"),
        ("./no/such/folder", r"no such checkpoint folder"),
    ],
)
def test_unknown_sources(source: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_encoder(source)


def test_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a medfoundry checkpoint"):
        load_encoder(tmp_path)


def test_load_encoder_is_exported_lazily() -> None:
    assert medfoundry.load_encoder is load_encoder
    code = "import sys, medfoundry as m; assert 'torch' not in sys.modules and 'load_encoder' in m.__all__"
    subprocess.run([sys.executable, "-c", code], check=True)

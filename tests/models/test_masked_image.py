"""Masked-image objectives: one route per encoder family, masking where it should be, bad settings."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medfoundry.errors import ConfigError
from medfoundry.models import (
    MaskedAutoencoderViT,
    MaskTokenMIM,
    create_encoder,
    create_masked_image_objective,
)
from medfoundry.models.masking import masked_unit_loss, patchify
from medfoundry.recipes.pretrain.config import PretrainConfig
from medfoundry.tasks import TaskSpec

SMALL_DECODER = {"decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}
VIT = ("vit_tiny_patch16_224", {"img_size": 64, "model_kwargs": {"depth": 2}})
SWIN = (
    "swin_tiny_patch4_window7_224",
    {"img_size": 64, "model_kwargs": {"window_size": 4, "embed_dim": 24, "depths": (1, 1, 1, 1)}},
)
CNN = ("resnet10t", {})


def _objective(encoder_spec: tuple[str, dict[str, Any]], size: int = 64, **settings: Any) -> tuple[Any, Any]:
    name, kwargs = encoder_spec
    encoder = create_encoder(name, **kwargs)
    return encoder, create_masked_image_objective(encoder, image_size=size, **{**SMALL_DECODER, **settings})


@pytest.mark.parametrize(
    ("encoder_spec", "masking", "expected"),
    [
        (VIT, "auto", (MaskedAutoencoderViT, True)),
        (VIT, "mask_token", (MaskedAutoencoderViT, False)),
        (SWIN, "auto", (MaskTokenMIM, "patch_embed")),
        (CNN, "auto", (MaskTokenMIM, "input")),
        (("convnext_atto", {}), "mask_token", (MaskTokenMIM, "input")),
    ],
    ids=["vit-drop", "vit-mask-token", "swin", "resnet", "convnext"],
)
def test_each_family_gets_its_route_and_trains(
    encoder_spec: tuple[str, dict[str, Any]], masking: str, expected: tuple[type, object]
) -> None:
    encoder, objective = _objective(encoder_spec, masking=masking)
    cls, route = expected
    assert isinstance(objective, cls)
    got = objective.drop_tokens if cls is MaskedAutoencoderViT else objective.masking_point
    assert got == route
    images = torch.rand(2, 3, 64, 64)
    out = objective(encoder, images)
    assert out.pred.shape == (2, 16, 3 * 16 * 16) and out.mask.shape == (2, 16)
    assert out.mask.sum(dim=1).tolist() == [12.0, 12.0]  # 0.75 of 16 units, exactly
    assert 0.5 < out.loss.item() < 2.0  # about 1 at initialisation
    assert out.loss.item() == pytest.approx(
        masked_unit_loss(out.pred, patchify(encoder.normalize(images), 16), out.mask).item()
    )
    out.loss.backward()
    assert any(p.grad is not None for p in encoder.backbone.parameters())


def test_the_loss_ignores_predictions_of_visible_units() -> None:
    encoder, objective = _objective(CNN)
    out = objective(encoder, torch.rand(2, 3, 64, 64))
    (grad,) = torch.autograd.grad(out.loss, out.pred)
    assert grad[out.mask == 0].abs().max() == 0
    assert grad[out.mask == 1].abs().max() > 0


def test_token_dropping_runs_the_vit_on_visible_tokens_only() -> None:
    encoder, objective = _objective(VIT)
    seen: list[tuple[int, ...]] = []
    encoder.backbone.blocks[0].register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    objective(encoder, torch.rand(2, 3, 64, 64))
    assert seen == [(2, 1 + 4, 192)]  # class token + the 4 visible of 16 patches
    _, with_tokens = _objective(VIT, masking="mask_token")
    with_tokens(encoder, torch.rand(2, 3, 64, 64))
    assert seen[-1] == (2, 1 + 16, 192)


def test_mask_units_larger_than_the_patch_mask_whole_blocks_of_tokens() -> None:
    encoder = create_encoder("vit_tiny_patch16_224", img_size=64, model_kwargs={"depth": 1, "patch_size": 8})
    objective = create_masked_image_objective(encoder, image_size=64, mask_unit_size=16, **SMALL_DECODER)
    seen: list[int] = []
    encoder.backbone.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    out = objective(encoder, torch.rand(2, 3, 64, 64))
    assert out.mask.shape == (2, 16) and seen == [1 + 4 * 4]  # 4 visible units of 2 x 2 patches


def test_swin_mask_token_replaces_masked_units_at_the_patch_embedding() -> None:
    encoder, objective = _objective(SWIN)
    stage_inputs: list[torch.Tensor] = []
    encoder.backbone.layers[0].register_forward_hook(lambda m, i, o: stage_inputs.append(i[0]))
    out = objective(encoder, torch.rand(1, 3, 64, 64))
    tokens = stage_inputs[0][0]  # (16, 16, C): patch embedding at stride 4, channels last
    unit_mask = out.mask[0].view(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1).bool()
    token = objective.mask_token.view(-1)
    assert torch.allclose(tokens[unit_mask], token.expand(int(unit_mask.sum()), -1))
    assert not torch.isclose(tokens[~unit_mask], token).all(dim=-1).any()


def test_masks_are_random_in_training_and_fixed_in_eval() -> None:
    encoder, objective = _objective(CNN)
    x = torch.rand(2, 3, 64, 64)
    assert not torch.equal(objective(encoder, x).mask, objective(encoder, x).mask)
    objective.eval()
    state = torch.random.get_rng_state()
    assert torch.equal(objective(encoder, x).mask, objective(encoder, x).mask)
    assert torch.equal(torch.random.get_rng_state(), state)  # validation leaves the run's RNG alone


def _problems(encoder_spec: tuple[str, dict[str, Any]], size: int, **settings: Any) -> str:
    with pytest.raises(ConfigError) as info:
        _objective(encoder_spec, size, **settings)
    assert all("\n" not in p for p in info.value.problems)
    return str(info.value)


def test_sizes_that_do_not_fit_are_one_line_errors() -> None:
    assert "model.image_size: 72 is not a multiple of the mask unit" in _problems(VIT, 72)
    assert "mask_unit_size: 12 px is not a multiple of the ViT's patch" in _problems(
        VIT, 48, mask_unit_size=12
    )
    assert "mask_unit_size: 6 px is not a multiple of the Swin patch (4 px)" in _problems(
        SWIN, 48, mask_unit_size=6
    )
    assert "not a multiple of the encoder's deepest stride (32 px)" in _problems(CNN, 48)
    assert "mask_ratio: 1.5 is outside (0, 1)" in _problems(CNN, 64, mask_ratio=1.5)
    assert "leaves no unit masked or none visible" in _problems(CNN, 32, mask_ratio=0.9)
    assert "decoder_dim: 30 must be a multiple of 4" in _problems(CNN, 64, decoder_dim=30)


def test_families_without_a_route_are_rejected() -> None:
    message = _problems(("eva02_tiny_patch14_224", {"img_size": 56, "model_kwargs": {"depth": 1}}), 56)
    assert message.startswith("model.encoder.name: Eva encoders have no masked-image route")
    assert "masking: drop_tokens needs a plain ViT, but the encoder is a ResNet" in _problems(
        CNN, 64, masking="drop_tokens"
    )


def test_a_mask_ratio_outside_the_open_interval_fails_config_validation() -> None:
    task = TaskSpec(name="u", type="masked_image", source={"path": "u.csv"})
    for ratio in (0.0, 1.0):
        with pytest.raises(ValueError, match="mask_ratio"):
            PretrainConfig.model_validate(
                {
                    "run_dir": "r",
                    "tasks": [task],
                    "model": {"encoder": {"name": "resnet10t"}, "masked_image": {"mask_ratio": ratio}},
                }
            )


def test_vit_gradient_checkpointing_gives_the_same_loss() -> None:
    losses = []
    for enable in (False, True):
        torch.manual_seed(0)
        encoder = create_encoder("vit_tiny_patch16_224", img_size=64, model_kwargs={"depth": 2})
        encoder.set_grad_checkpointing(enable)
        objective = create_masked_image_objective(encoder, image_size=64, **SMALL_DECODER)
        losses.append(objective(encoder, torch.rand(2, 3, 64, 64)).loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)

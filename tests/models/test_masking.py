"""Masking, patchify and the masked-unit loss, checked against MAE's reference code.

Reference: facebookresearch/mae, models_mae.py at commit 6a2ba402291005b003a70e99f7c87d1a2c376b0d
(``patchify``: einsum 'nchpwq->nhwpqc'; ``forward_loss``: per-patch normalised MSE on removed patches).
"""

from __future__ import annotations

import pytest
import torch

from medfoundry.models.masking import (
    MaskedImageOutput,
    masked_unit_loss,
    patchify,
    random_unit_mask,
    render_reconstruction,
    unpatchify,
    upsample_mask,
)


def _mae_patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    n, _, h, _ = imgs.shape
    g = h // p
    x = imgs.reshape(n, 3, g, p, g, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, g * g, p**2 * 3)


def _mae_forward_loss(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize(("units", "ratio"), [(196, 0.75), (16, 0.75), (49, 0.6), (64, 0.9)])
def test_realised_mask_ratio_equals_the_configured_one(units: int, ratio: float) -> None:
    mask = random_unit_mask(8, units, round(ratio * units))
    per_image = mask.mean(dim=1)
    assert torch.all(per_image == per_image[0])  # every image exactly the same share
    assert abs(per_image[0].item() - ratio) <= 0.5 / units
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_masks_differ_between_images_and_follow_the_generator() -> None:
    mask = random_unit_mask(4, 196, 147)
    assert len({tuple(m.tolist()) for m in mask}) == 4
    a = random_unit_mask(2, 196, 147, generator=torch.Generator().manual_seed(0))
    b = random_unit_mask(2, 196, 147, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_patchify_matches_mae_and_inverts() -> None:
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(patchify(x, 16), _mae_patchify(x, 16))
    assert torch.equal(unpatchify(patchify(x, 8), 8, 8), x)


def test_upsampled_mask_covers_whole_units() -> None:
    unit = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    fine = upsample_mask(unit, 2, 3).view(6, 6)
    assert fine[:3, 3:].eq(1).all() and fine[3:, :3].eq(1).all()
    assert fine[:3, :3].eq(0).all() and fine[3:, 3:].eq(0).all()


def test_loss_matches_mae_reference() -> None:
    target, pred = torch.randn(3, 16, 768), torch.randn(3, 16, 768)
    mask = random_unit_mask(3, 16, 12)
    assert masked_unit_loss(pred, target, mask).item() == pytest.approx(
        _mae_forward_loss(target, pred, mask).item(), rel=1e-6
    )


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_ignores_visible_units(norm_pix_loss: bool) -> None:
    target = torch.rand(2, 16, 48) * 3 + 1
    pred = torch.randn(2, 16, 48, requires_grad=True)
    mask = random_unit_mask(2, 16, 12)
    loss = masked_unit_loss(pred, target, mask, norm_pix_loss=norm_pix_loss)
    (grad,) = torch.autograd.grad(loss, pred)
    visible = mask == 0
    assert grad[visible].abs().max() == 0 and grad[~visible].abs().max() > 0
    changed = pred.detach().clone()
    changed[visible] += 100.0
    assert masked_unit_loss(changed, target, mask, norm_pix_loss=norm_pix_loss).item() == pytest.approx(
        loss.item()
    )


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_is_about_one_at_chance(norm_pix_loss: bool) -> None:
    """The best constant prediction (zeros per unit; the mean without normalisation) scores ~1."""
    target = torch.rand(4, 64, 768) * 2 - 0.5
    mask = random_unit_mask(4, 64, 48)
    constant = torch.zeros_like(target) if norm_pix_loss else torch.full_like(target, 0.5)
    assert masked_unit_loss(constant, target, mask, norm_pix_loss=norm_pix_loss).item() == pytest.approx(
        1.0, abs=0.01
    )
    perfect = (target - target.mean(-1, keepdim=True)) / target.std(-1, keepdim=True)
    assert (
        masked_unit_loss(perfect if norm_pix_loss else target, target, mask, norm_pix_loss=norm_pix_loss)
        < 1e-4
    )


def test_rendered_reconstruction_keeps_visible_pixels_and_fills_masked_ones() -> None:
    images = torch.rand(2, 3, 32, 32)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    mask = random_unit_mask(2, 4, 3)
    # a perfect normalised prediction reconstructs the masked units exactly
    target = patchify((images - mean) / std, 16)
    pred = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    masked, reconstruction = render_reconstruction(
        images, MaskedImageOutput(torch.tensor(0.0), pred, mask), 16, norm_pix_loss=True, mean=mean, std=std
    )
    assert torch.allclose(reconstruction, images, atol=1e-4)
    pixel_mask = upsample_mask(mask, 2, 16).view(2, 1, 32, 32).expand_as(images).bool()
    assert torch.equal(masked[~pixel_mask], images[~pixel_mask])
    assert masked[pixel_mask].eq(0.5).all()

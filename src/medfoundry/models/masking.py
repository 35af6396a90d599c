"""Pieces shared by the masked-image objectives: random unit masks, (un)patchify, the loss, previews.

A *mask unit* is a square of ``u x u`` pixels (16 in MAE [0] and VIS-MAE [1]); an image of side
``S`` has ``U = (S / u)^2`` of them, in row-major order. Both objectives mask whole units and
predict the pixels of every unit; only masked units count in the loss.

The loss is the MSE over the pixels of masked units. With ``norm_pix_loss`` (MAE's default),
each unit's target is normalised by its own mean and variance [0], so predicting zeros, the best
constant prediction, gives ``(n - 1) / n`` per non-flat unit (``n = 3 u^2`` values; 0.9987 for
16-pixel units): the loss is about 1 at chance, as every medfoundry task loss is. Without it, the
MSE is divided by the variance of the batch's masked target values, so that predicting their
mean again gives about 1.

[0] He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
[1] Liu et al., "VIS-MAE: An Efficient Self-supervised Learning Approach on Medical Image
    Segmentation and Classification", arXiv 2402.01034 (2024).
[2] https://github.com/facebookresearch/mae/blob/6a2ba402291005b003a70e99f7c87d1a2c376b0d/models_mae.py
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "MaskedImageOutput",
    "masked_unit_loss",
    "patchify",
    "random_unit_mask",
    "render_reconstruction",
    "score_reconstruction",
    "unpatchify",
    "upsample_mask",
]


@dataclass
class MaskedImageOutput:
    """What a masked-image objective returns for a batch (MAE's ``loss, pred, mask`` [2]).

    Attributes:
        loss: Scalar loss over masked units (about 1 at chance, see the module docstring).
        pred: ``(B, U, 3 u^2)`` predicted values of every unit, in the loss's target space:
            normalised per unit with ``norm_pix_loss``, else the encoder's normalised pixels.
        mask: ``(B, U)`` float32, 1 for masked (predicted, in the loss) and 0 for visible units.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor


def random_unit_mask(
    batch: int,
    num_units: int,
    num_masked: int,
    *,
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask exactly ``num_masked`` of ``num_units`` units per image, uniformly at random.

    Ranking uniform noise, as MAE's ``random_masking`` [2], gives every image the same number
    of masked units, so visible tokens stack into one tensor.

    Returns:
        ``(batch, num_units)`` float32, 1 = masked.

    Examples:
        >>> mask = random_unit_mask(2, 16, 12)
        >>> mask.sum(dim=1).tolist()
        [12.0, 12.0]
    """
    noise = torch.rand(batch, num_units, device=device, generator=generator)
    mask = torch.zeros(batch, num_units, device=device)
    return mask.scatter_(1, noise.argsort(dim=1)[:, :num_masked], 1.0)


def objective_mask(
    batch: int, num_units: int, num_masked: int, *, device: torch.device, training: bool
) -> torch.Tensor:
    """``random_unit_mask`` as the objectives use it: torch's global RNG in training (saved and
    restored with a run), a fixed seed in eval (validation losses compare across steps, and
    validating leaves the training RNG untouched)."""
    generator = None if training else torch.Generator(device).manual_seed(0)
    return random_unit_mask(batch, num_units, num_masked, device=device, generator=generator)


def upsample_mask(mask: torch.Tensor, grid: int, factor: int) -> torch.Tensor:
    """``(B, grid^2)`` unit mask -> ``(B, (grid * factor)^2)`` mask of a finer row-major grid.

    Examples:
        >>> upsample_mask(torch.tensor([[1.0, 0, 0, 0]]), 2, 2).view(4, 4)[0].tolist()
        [1.0, 1.0, 0.0, 0.0]
    """
    square = mask.view(-1, grid, grid)
    return square.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2).flatten(1)


def patchify(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/size)(W/size), size^2 C)``: row-major patches, values (row, col, channel).

    Examples:
        >>> patchify(torch.rand(2, 3, 32, 32), 16).shape
        torch.Size([2, 4, 768])
    """
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // size, size, w // size, size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // size) * (w // size), size * size * c)


def unpatchify(patches: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """Inverse of ``patchify`` for a square ``grid x grid`` of patches: -> ``(B, C, grid size, grid size)``.

    Examples:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> torch.equal(unpatchify(patchify(x, 16), 16, 2), x)
        True
    """
    b, _, values = patches.shape
    c = values // (size * size)
    x = patches.reshape(b, grid, grid, size, size, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, grid * size, grid * size)


def _unit_stats(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # MAE [2]: unbiased variance, 1e-6 under the square root
    return target.mean(dim=-1, keepdim=True), (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()


def masked_unit_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, norm_pix_loss: bool = True
) -> torch.Tensor:
    """MSE over the values of masked units only, about 1 at chance (see the module docstring).

    Args:
        pred: ``(B, U, V)`` predictions.
        target: ``(B, U, V)`` target values (the encoder's normalised pixels, patchified).
        mask: ``(B, U)``, 1 = masked. Visible units do not contribute, whatever ``pred`` holds.
        norm_pix_loss: Normalise each unit's target by its own mean and variance.

    Returns:
        Scalar float32 loss.

    Examples:
        >>> target = torch.randn(2, 4, 48)
        >>> mask = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0]])
        >>> round(masked_unit_loss(torch.zeros_like(target), target, mask).item(), 2)
        0.98
    """
    pred, target = pred.float(), target.float()
    if norm_pix_loss:
        mean, std = _unit_stats(target)
        per_unit = ((pred - (target - mean) / std) ** 2).mean(dim=-1)
        return (per_unit * mask).sum() / mask.sum()
    per_unit = ((pred - target) ** 2).mean(dim=-1)
    variance = target[mask.bool()].var().detach()
    return (per_unit * mask).sum() / mask.sum() / (variance + 1e-6)


def score_reconstruction(
    pred: torch.Tensor,
    token_size: int,
    grid: int,
    *,
    x: torch.Tensor,
    unit_size: int,
    unit_mask: torch.Tensor,
    norm_pix_loss: bool,
) -> MaskedImageOutput:
    """Regroup a decoder's per-token pixels into mask units and score the masked ones.

    Args:
        pred: ``(B, grid^2, 3 token_size^2)`` pixels predicted per token.
        token_size: Side in pixels of the square each token predicts.
        grid: Side of the token grid.
        x: ``(B, 3, H, W)`` the encoder's normalised input (the target).
        unit_size: Mask unit side in pixels.
        unit_mask: ``(B, U)``, 1 = masked.
        norm_pix_loss: Normalise each unit's target by its mean and variance.
    """
    if token_size != unit_size:
        pred = patchify(unpatchify(pred, token_size, grid), unit_size)
    loss = masked_unit_loss(pred, patchify(x, unit_size), unit_mask, norm_pix_loss=norm_pix_loss)
    return MaskedImageOutput(loss, pred, unit_mask)


@torch.no_grad()
def render_reconstruction(
    images: torch.Tensor,
    output: MaskedImageOutput,
    unit_size: int,
    *,
    norm_pix_loss: bool,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked input and the reconstruction, as images, for previews.

    With ``norm_pix_loss`` the model predicts each unit's normalised pattern only; as in the
    MAE paper's figures [0], the prediction is shown with the unit's true mean and variance.
    Visible units show the input (they are not predicted targets).

    Args:
        images: ``(B, 3, H, W)`` float32 in [0, 1], the objective's input.
        output: The objective's output for ``images``.
        unit_size: Mask unit side, in pixels.
        norm_pix_loss: Whether ``output.pred`` is normalised per unit.
        mean: ``(1, 3, 1, 1)`` the encoder's input mean.
        std: ``(1, 3, 1, 1)`` the encoder's input std.

    Returns:
        ``(masked, reconstruction)``, each ``(B, 3, H, W)`` float32 in [0, 1]; masked units are
        grey in ``masked``.
    """
    grid = images.shape[-1] // unit_size
    pred = output.pred.float()
    if norm_pix_loss:
        unit_mean, unit_std = _unit_stats(patchify((images - mean) / std, unit_size))
        pred = pred * unit_std + unit_mean
    predicted = (unpatchify(pred, unit_size, grid) * std + mean).clamp(0, 1)
    pixel_mask = upsample_mask(output.mask, grid, unit_size).view_as(images[:, :1])
    masked = images * (1 - pixel_mask) + 0.5 * pixel_mask
    return masked, images * (1 - pixel_mask) + predicted * pixel_mask

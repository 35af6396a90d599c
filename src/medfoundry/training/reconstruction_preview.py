"""Reconstruction previews of masked-image tasks: PNG grids of original / masked / reconstruction.

The same validation images and, in eval mode, the same masks are used every time, so grids
from different steps of a run compare directly. Written to ``RUN/previews/<task>/step_<N>.png``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from medfoundry.models.masked_image import MaskedImageObjective
from medfoundry.models.masking import render_reconstruction
from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.safe_writes import make_folder, write_file_atomically

__all__ = ["ReconstructionPreviews", "reconstruction_grid"]


def reconstruction_grid(columns: list[torch.Tensor], min_tile: int = 96, gap: int = 2) -> Image.Image:
    """One row per image, one column per tensor, on a white background.

    Args:
        columns: Tensors ``(B, 3, H, W)`` float in [0, 1], e.g. original, masked, reconstruction.
        min_tile: Small images are enlarged (nearest neighbour, whole multiples) to at least this.
        gap: White pixels between tiles.

    Examples:
        >>> grid = reconstruction_grid([torch.rand(2, 3, 32, 32)] * 3, min_tile=32)
        >>> grid.size
        (100, 66)
    """
    b, _, h, w = columns[0].shape
    scale = max(1, -(-min_tile // max(h, w)))
    th, tw = h * scale, w * scale
    canvas = np.full((b * (th + gap) - gap, len(columns) * (tw + gap) - gap, 3), 255, np.uint8)
    for c, images in enumerate(columns):
        tiles = (images.detach().float().clamp(0, 1) * 255).round().byte().cpu()
        tiles = tiles.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        for r in range(b):
            y, x = r * (th + gap), c * (tw + gap)
            canvas[y : y + th, x : x + tw] = tiles[r].permute(1, 2, 0).numpy()
    return Image.fromarray(canvas)


class ReconstructionPreviews:
    """Saves a preview grid per masked-image task of a model.

    Args:
        model: The multi-task model; tasks whose feature is ``masked`` get previews.
        datasets: Task name -> dataset of ``(image, target)`` (usually the validation splits);
            ``max_images`` evenly spaced images of each masked-image task are shown.
        out_dir: Folder of the previews (one subfolder per task).
        max_images: Rows per grid.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        datasets: Mapping[str, Dataset[tuple[torch.Tensor, object]]],
        out_dir: Path,
        *,
        max_images: int = 8,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.images = {
            task: torch.stack([dataset[int(i)][0] for i in _spread(len(dataset), max_images)])  # type: ignore[arg-type]
            for task, dataset in datasets.items()
            if model.head_features[task] == "masked" and len(dataset)  # type: ignore[arg-type]
        }

    def __bool__(self) -> bool:
        return bool(self.images)

    @torch.no_grad()
    def save(self, model: MultiTaskModel, step: int) -> list[Path]:
        """Write one grid per task for the model's current weights; returns the files written."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        objective = cast(MaskedImageObjective, model.masked_image)
        mean, std = cast(torch.Tensor, model.encoder.mean), cast(torch.Tensor, model.encoder.std)
        written = []
        for task, images in self.images.items():
            images = images.to(device)
            output = model(task, images)
            masked, reconstruction = render_reconstruction(
                images,
                output,
                objective.mask_unit_size,
                norm_pix_loss=objective.norm_pix_loss,
                mean=mean,
                std=std,
            )
            path = self.out_dir / task / f"step_{step:07d}.png"
            make_folder(path.parent, "previews folder")
            png = io.BytesIO()
            reconstruction_grid([images, masked, reconstruction]).save(png, format="PNG")
            write_file_atomically(path, png.getvalue())  # never a half-written PNG, nor through a link
            written.append(path)
        model.train(was_training)
        return written


def _spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` distinct indices spread evenly over ``range(n)`` (sources listed one after another)."""
    m = min(n, k)
    return [round(i * (n - 1) / max(m - 1, 1)) for i in range(m)]

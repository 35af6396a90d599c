from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medfoundry.models import EncoderConfig, MaskedImageConfig, ModelConfig, build_multitask_model
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training.reconstruction_preview import ReconstructionPreviews, reconstruction_grid


def _model() -> torch.nn.Module:
    specs = [
        TaskSpec(name="u", type="masked_image", source={"path": "u.csv"}),
        TaskSpec(name="c", type="classification", classes=["a", "b"], source={"path": "c.csv"}),
    ]
    cfg = ModelConfig(
        image_size=32,
        encoder=EncoderConfig(name="resnet10t"),
        masked_image=MaskedImageConfig(decoder_dim=16, decoder_depth=1, decoder_num_heads=2),
    )
    return build_multitask_model(cfg, {s.name: build_task(s) for s in specs})


def test_grid_rows_are_images_and_columns_are_views() -> None:
    columns = [torch.zeros(3, 3, 48, 48), torch.ones(3, 3, 48, 48)]
    grid = np.asarray(reconstruction_grid(columns, min_tile=96, gap=2))
    assert grid.shape == (3 * 98 - 2, 2 * 98 - 2, 3)  # 48 px tiles doubled to 96
    assert grid[:96, :96].max() == 0 and grid[:96, 98:].min() == 255


def test_previews_of_masked_image_tasks_only(tmp_path: Path) -> None:
    model = _model()
    images = [(torch.rand(3, 32, 32), None) for _ in range(5)]
    previews = ReconstructionPreviews(model, {"u": images, "c": images}, tmp_path, max_images=4)
    assert list(previews.images) == ["u"] and previews.images["u"].shape == (4, 3, 32, 32)
    model.train()
    (path,) = previews.save(model, 120)
    assert path == tmp_path / "u" / "step_0000120.png" and model.training
    grid = np.asarray(Image.open(path))
    assert grid.shape == (4 * 98 - 2, 3 * 98 - 2, 3)
    first = (images[0][0] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(grid[:96:3, :96:3], first)  # the original, enlarged 3x
    assert not ReconstructionPreviews(model, {"c": images}, tmp_path)

"""The label-free two-view task (VICReg): loss equal to the reference, views, head, training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional as F  # noqa: N812

from medfoundry.errors import ConfigError
from medfoundry.models import build_multitask_model
from medfoundry.models.config import ModelConfig
from medfoundry.recipes import pretrain
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.tasks import TASK_TYPES, TaskSpec, TwoViewTask, build_task
from medfoundry.tasks.random_views import RandomViews
from medfoundry.tasks.two_view import vicreg_loss
from tests.conftest import tiny_config


def _spec(**fields: object) -> TaskSpec:
    fields = {"name": "v", "type": "two_view", "source": {"path": "v.csv"}, **fields}
    return TaskSpec.model_validate(fields)


def _off_diagonal(x: torch.Tensor) -> torch.Tensor:
    n, m = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def _reference_vicreg(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """VICReg.forward of facebookresearch/vicreg (main_vicreg.py), coefficients 25 / 25 / 1."""
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = _off_diagonal(cov_x).pow_(2).sum().div(num_features) + _off_diagonal(cov_y).pow_(2).sum().div(
        num_features
    )
    return 25.0 * repr_loss + 25.0 * std_loss + 1.0 * cov_loss


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_loss_equals_the_reference_implementation(scale: float) -> None:
    torch.manual_seed(0)
    z1 = scale * torch.randn(16, 32)
    z2 = z1 + 0.3 * torch.randn(16, 32)
    assert torch.allclose(vicreg_loss(z1, z2), _reference_vicreg(z1, z2), rtol=1e-5)
    task = build_task(_spec())
    assert torch.allclose(task.loss((z1, z2), None), _reference_vicreg(z1, z2) / 25, rtol=1e-5)


def test_collapse_scores_about_one_and_spread_agreeing_views_score_little() -> None:
    task = build_task(_spec())
    same = torch.ones(32, 64)
    assert task.loss((same, same), None).item() == pytest.approx(0.99)
    torch.manual_seed(0)
    spread = 1.5 * torch.randn(4096, 64)  # std 1.5 in every dimension, nearly uncorrelated
    assert task.loss((spread, spread), None).item() < 0.01
    one = torch.randn(1, 64)
    assert torch.isfinite(task.loss((one, one), None))


def test_registered_unlabelled_and_routed_to_the_encoder() -> None:
    task = build_task(_spec())
    assert TASK_TYPES.get("two_view") is TwoViewTask
    assert (task.feature, task.target, task.primary_metric) == ("views", "image", None)
    assert task.collate_targets([None, None]) is None
    assert task.metrics().compute() == {}


def test_classes_and_bad_options_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"two_view tasks are unlabelled; remove the classes \['a'\]"):
        build_task(_spec(classes=["a"]))
    with pytest.raises(ConfigError, match=r"options.mask_ratio: unknown key"):
        build_task(_spec(options={"mask_ratio": 0.5}))
    with pytest.raises(ConfigError, match=r"options.crop_scale: need 0 < low <= high <= 1, got 0.9, 0.5"):
        build_task(_spec(options={"crop_scale": [0.9, 0.5]}))


def test_views_differ_per_image_and_stay_in_range() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    views = RandomViews()(image.expand(8, -1, -1, -1))
    assert views.shape == (8, 3, 32, 32) and views.min() >= 0 and views.max() <= 1
    distinct = {tuple(v.flatten()[:64].tolist()) for v in views}
    assert len(distinct) == 8  # each image drew its own crop and intensities


def test_head_owns_only_the_expander_and_validation_views_are_fixed() -> None:
    task = build_task(_spec(options={"expander_dim": 16}))
    model = build_multitask_model(
        ModelConfig.model_validate({"image_size": 32, "encoder": {"name": "resnet10t"}}), {"v": task}
    )
    head_ids = {id(p) for p in model.head_parameters("v")}
    assert head_ids == {id(p) for p in model.heads["v"].expander.parameters()}
    assert not head_ids & {id(p) for p in model.encoder.parameters()}
    images = torch.rand(4, 3, 32, 32)
    z1, z2 = model("v", images)
    assert z1.shape == z2.shape == (4, 16)
    z1.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)

    model.eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        first, second = model("v", images), model("v", images)
    assert torch.equal(torch.get_rng_state(), state)  # validation leaves training's stream alone
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.integration
def test_loss_falls_on_real_images(small_db: Path, tmp_path: Path) -> None:
    """Only a two-view task, on the small corpus's real microscopy and fundus tiles."""
    images = small_db.parent / "imaging_technique.csv"
    tasks = [
        {
            "name": "views",
            "type": "two_view",
            "options": {"expander_dim": 64},
            "source": {"path": str(images)},
        }
    ]
    cfg = tiny_config(tmp_path / "run", tasks, **{"training.max_steps": 60, "data.batch_size": 16})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = pretrain.run(load_pretrain_config(tmp_path / "c.yaml"))
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss/views"] for row in logs if row["kind"] == "train"]
    val = [row["views/loss"] for row in logs if row["kind"] == "val"]
    assert 0.5 < losses[0] < 1.5  # about 1 at the start, like every task type
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses
    assert val[-1] < 0.9 * val[0], val

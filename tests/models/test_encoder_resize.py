"""The encoder's input-size contract: trained weights rebuilt at another size, or refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medfoundry.errors import ConfigError
from medfoundry.evaluation.pretrained_encoder import load_encoder
from medfoundry.models.encoder import create_encoder
from medfoundry.models.encoder_resize import load_resized_weights
from medfoundry.recipes import pretrain
from medfoundry.recipes.pretrain.config import load_pretrain_config
from tests.conftest import tiny_config

TINY_VIT = {"embed_dim": 32, "depth": 1, "num_heads": 2}
TINY_SWIN = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4}
ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": ("vit_tiny_patch16_224", TINY_VIT),
    "swin": ("swin_tiny_patch4_window7_224", TINY_SWIN),
}


@pytest.mark.parametrize("family", ENCODERS)
def test_position_tables_are_resampled_and_every_other_weight_is_kept(family: str) -> None:
    name, kwargs = ENCODERS[family]
    torch.manual_seed(0)
    trained = create_encoder(name, img_size=32, model_kwargs=kwargs)
    rebuilt = load_resized_weights(
        create_encoder(name, img_size=64, model_kwargs=kwargs), trained, trained_size=32, image_size=64
    )
    old, new = trained.state_dict(), rebuilt.state_dict()
    resized = [k for k in old if old[k].shape != new[k].shape]
    kind = "pos_embed" if family == "vit" else "relative_position_bias_table"
    assert resized and all(k.endswith(kind) for k in resized)
    assert all(torch.equal(old[k], new[k]) for k in old if k not in resized)
    maps = rebuilt(torch.rand(2, 3, 64, 64))
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    # at the trained size the rebuild is the trained encoder itself
    same = load_resized_weights(
        create_encoder(name, img_size=32, model_kwargs=kwargs), trained, trained_size=32, image_size=32
    )
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(same(images)[-1], trained(images)[-1])


def test_a_vit_position_embedding_keeps_its_layout_when_resampled() -> None:
    """A ramp over the patch grid stays a ramp (bicubic resampling, as timm resizes ImageNet weights)."""
    name, kwargs = ENCODERS["vit"]
    trained = create_encoder(name, img_size=64, model_kwargs=kwargs)
    with torch.no_grad():
        ramp = torch.linspace(0, 1, 4).repeat(4, 1).reshape(1, 16, 1)  # along x, 4 x 4 patches
        trained.backbone.pos_embed[:, 1:] = ramp.expand(1, 16, 32)
    rebuilt = load_resized_weights(
        create_encoder(name, img_size=128, model_kwargs=kwargs), trained, trained_size=64, image_size=128
    )
    grid = rebuilt.backbone.pos_embed[0, 1:, 0].reshape(8, 8)
    assert torch.allclose(grid, grid[0].expand(8, 8)) and bool((grid[0].diff() >= 0).all())
    assert torch.equal(rebuilt.backbone.pos_embed[:, :1], trained.backbone.pos_embed[:, :1])  # class token


def test_weights_that_fix_the_input_size_are_refused_with_one_line() -> None:
    """An MLP-Mixer's token-mixing layers are as wide as the patch grid: no size but its own."""
    trained = create_encoder("mixer_s16_224", img_size=32)
    with pytest.raises(
        ConfigError, match=r"^trained at 32 px, and its weights .*mlp_tokens.* cannot run at 64"
    ):
        load_resized_weights(
            create_encoder("mixer_s16_224", img_size=64), trained, trained_size=32, image_size=64
        )


@pytest.fixture(scope="module")
def vit_checkpoint(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pretraining step of a tiny ViT at 32 px on the real demo images."""
    root = tmp_path_factory.mktemp("vit")
    cfg = tiny_config(root / "run", str(small_db), **{"training.max_steps": 1})
    cfg["model"]["encoder"] = {"name": "vit_tiny_patch16_224", "model_kwargs": TINY_VIT}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return pretrain.run(load_pretrain_config(root / "c.yaml")) / "checkpoints" / "last"


@pytest.mark.integration
def test_a_vit_checkpoint_embeds_and_fine_tunes_at_another_size(vit_checkpoint: Path) -> None:
    """Before: an AssertionError in ``embed`` and a position-embedding mismatch in fine-tuning."""
    encoder = load_encoder(vit_checkpoint, image_size=64)
    assert encoder.image_size == 64 and tuple(encoder.embed(torch.rand(2, 3, 64, 64)).shape) == (2, 32)
    from medfoundry.models.build import build_multitask_model
    from medfoundry.tasks import TaskSpec, build_task

    spec = TaskSpec(name="t", type="classification", classes=["a", "b"], source={"path": "t.csv"})
    model = build_multitask_model(encoder.model_config(), {"t": build_task(spec)})
    model.encoder.load_state_dict(encoder.encoder.state_dict())  # what fine-tuning does
    assert tuple(model("t", torch.rand(2, 3, 64, 64)).shape) == (2, 2)

"""Masked-image pretraining end to end on real packaged images: alone, in a hybrid run, and after.

The MAE run is shared by the tests of this module: its reconstruction loss must fall, its
encoder must go through a linear probe, and its weights must load into segmentation, detection
and classification models.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression

from medfoundry.data.task_dataset import TaskDataset
from medfoundry.data.task_records import load_task_records
from medfoundry.models import build_multitask_model
from medfoundry.recipes import pretrain
from medfoundry.recipes.export import to_timm
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training.metrics_log import read_metrics
from medfoundry.training.model_loading import load_multitask_model
from tests.conftest import tiny_config

pytestmark = pytest.mark.integration

MAE_STEPS = 200
TILES = "imaging_technique.csv"  # its images, unlabelled: 292 train, 16 val
VIT = {"name": "vit_tiny_patch16_224", "model_kwargs": {"patch_size": 8, "depth": 4}}


def _run(tmp_path: Path, cfg: dict[str, Any], resume: bool = False) -> Path:
    path = tmp_path / f"{Path(cfg['run_dir']).name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return pretrain.run(load_pretrain_config(path), resume=resume)


@pytest.fixture(scope="module")
def mae_run(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pure MAE run: ViT (4 blocks, 8-px patches) at 32 px on the small corpus's microscopy and
    fundus tiles, labels unused (its all_images validates on 7 tiles, too few to follow the loss)."""
    tmp = tmp_path_factory.mktemp("mae")
    optimizer = {"lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.95], "warmup_steps": 20}
    cfg = tiny_config(
        tmp / "run",
        [{"name": "all_images", "type": "masked_image", "source": {"path": str(small_db.parent / TILES)}}],
        **{
            "model.encoder": VIT,
            "model.masked_image": {
                "mask_unit_size": 8,
                "decoder_dim": 64,
                "decoder_depth": 1,
                "decoder_num_heads": 4,
            },
            "data.batch_size": 32,
            "training.max_steps": MAE_STEPS,
            "training.optimizer": optimizer,
            "training.grad_clip_norm": None,
            "training.log_every_steps": 20,
            "training.checkpoint_every_steps": MAE_STEPS,
            "training.preview_every_steps": MAE_STEPS // 2,
        },
    )
    return _run(tmp, cfg)


def test_reconstruction_loss_falls_on_real_images(mae_run: Path) -> None:
    records = read_metrics(mae_run / "metrics.jsonl")
    val = [r["all_images/loss"] for r in records if r["kind"] == "val"]
    train = [r["loss/all_images"] for r in records if r["kind"] == "train"]
    assert 0.9 < val[0] < 2.0  # about chance (1) before training
    assert val[-1] < 0.8 * val[0] and val[-1] <= 1.01 * min(val), val  # validated every epoch
    assert train[-1] < 0.8 * train[0], train
    previews = sorted(p.name for p in (mae_run / "previews" / "all_images").iterdir())
    assert previews == [f"step_{MAE_STEPS // 2:07d}.png", f"step_{MAE_STEPS:07d}.png"]


def _embeddings(model: torch.nn.Module, dataset: TaskDataset) -> tuple[np.ndarray, np.ndarray]:
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        features = model.embed(images).numpy()
    return features, np.array([r.label for r in dataset.records])


def test_mae_encoder_goes_through_a_linear_probe(mae_run: Path, small_db: Path) -> None:
    """Frozen MAE encoder -> pooled embeddings -> logistic regression on a real labelled task.

    Uses scikit-learn directly; switch to medfoundry's linear probe once it lands (issue 5).
    """
    model, _ = load_multitask_model(mae_run / "checkpoints" / "last")
    listed = next(
        t for t in yaml.safe_load(small_db.read_text())["tasks"] if t["name"] == "imaging_technique"
    )
    spec = TaskSpec.model_validate({**listed, "source": {"path": small_db.parent / listed["source"]["path"]}})
    splits = load_task_records(
        spec.name, spec.source, "label", classes=spec.classes, seed=0, val_fraction=0.2
    )
    train = _embeddings(model, TaskDataset(splits["train"], "label", 32, augment=False))
    val = _embeddings(model, TaskDataset(splits["val"], "label", 32, augment=False))
    probe = LogisticRegression(max_iter=2000).fit(*train)
    assert probe.score(*val) > 0.6  # 5 balanced classes: chance is 0.2


def test_mae_encoder_loads_into_segmentation_detection_and_classification(
    mae_run: Path, small_db: Path, tmp_path: Path
) -> None:
    """Exported as plain timm weights, the encoder starts a labelled run through the config alone."""
    weights = to_timm.run(mae_run / "checkpoints" / "last", tmp_path / "timm") / "model.safetensors"
    encoder = {**VIT, "pretrained": True}
    encoder["model_kwargs"] = {**VIT["model_kwargs"], "pretrained_cfg_overlay": {"file": str(weights)}}
    settings = {"model.encoder": encoder, "training.max_steps": 2}
    cfg = tiny_config(tmp_path / "labelled", str(small_db), **settings)
    run_dir = _run(tmp_path, cfg)
    mae, _ = load_multitask_model(mae_run / "checkpoints" / "last")
    first = load_pretrain_config(tmp_path / "labelled.yaml")
    fresh = build_multitask_model(first.model, {s.name: build_task(s) for s in first.tasks})
    for key, value in mae.encoder.backbone.state_dict().items():
        assert torch.equal(fresh.encoder.backbone.state_dict()[key], value), key
    # a plain ViT feeds the U-Net and FCOS decoders through its simple feature pyramid
    assert [level.stride for level in fresh.encoder.feature_info] == [2, 4, 8, 16]
    losses = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"][-1]
    assert all(math.isfinite(losses[f"loss/{t}"]) for t in ("nuclei_seg", "nuclei_det", "imaging_technique"))


def test_hybrid_run_trains_labelled_and_masked_image_tasks_together(small_db: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "hybrid",
        str(small_db.parent / "tasks.yaml"),
        **{
            "model.masked_image": {"decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
            "training.max_steps": 4,
        },
    )
    run_dir = _run(tmp_path, cfg)
    last = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"][-1]
    for task in ("nuclei_seg", "nuclei_det", "imaging_technique", "all_images"):
        assert math.isfinite(last[f"loss/{task}"]), task
    assert (run_dir / "previews" / "all_images" / "step_0000004.png").is_file()
    # the parameterless head's optimizer state round-trips through the checkpoint
    assert _run(tmp_path, cfg, resume=True) == run_dir

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medfoundry.errors import ConfigError
from medfoundry.safe_writes import write_folder_atomically
from medfoundry.training.checkpoint import (
    load_checkpoint_config,
    load_model_weights,
    load_trainer_state,
    save_checkpoint,
)

# what every checkpoint config holds besides its description: the model and the tasks
REBUILD = {"model": {"image_size": 32, "encoder": {"name": "resnet10t"}}, "tasks": []}


def test_round_trip_without_pickle(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    rng = torch.get_rng_state()
    path = save_checkpoint(
        tmp_path / "ckpt", model, {**REBUILD, "note": "x"}, trainer_state={"step": 3, "rng": rng}
    )
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "trainer_state.json",
        "trainer_state.safetensors",
    ]
    other = torch.nn.Linear(4, 3)
    load_model_weights(path, other)
    assert torch.equal(other.weight, model.weight)
    assert load_checkpoint_config(path)["note"] == "x"
    assert torch.equal(load_trainer_state(path)["rng"], rng)


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "last", model, {**REBUILD, "step": 1})

    def crash(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomically(tmp_path / "last", crash)
    assert load_checkpoint_config(tmp_path / "last")["step"] == 1
    save_checkpoint(tmp_path / "last", model, {**REBUILD, "step": 2})  # cleans the stale temporary folder
    assert load_checkpoint_config(tmp_path / "last")["step"] == 2


def test_a_crash_between_the_renames_is_recovered(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "last", model, {**REBUILD, "step": 1})
    (tmp_path / "last").rename(tmp_path / ".last.old")
    assert load_checkpoint_config(tmp_path / "last")["step"] == 1


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a medfoundry checkpoint"):
        load_checkpoint_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a medfoundry checkpoint config"):
        load_checkpoint_config(tmp_path)
    save_checkpoint(tmp_path / "best", torch.nn.Linear(2, 2), REBUILD)
    with pytest.raises(ConfigError, match="no trainer state"):
        load_trainer_state(tmp_path / "best")
    with pytest.raises(ConfigError, match="weights do not fit"):
        load_model_weights(tmp_path / "best", torch.nn.Linear(3, 2))


def test_a_format_1_checkpoint_rebuilds_its_two_conv_pixel_decoder(tmp_path: Path) -> None:
    """Format 1 had two convs per up-sampling block of the pixel decoder; its configs do not say so."""
    from medfoundry.models import EncoderConfig, ModelConfig, PixelDecoderConfig, build_multitask_model
    from medfoundry.tasks import TaskSpec, build_task
    from medfoundry.training.model_loading import load_multitask_model

    spec = TaskSpec(name="seg", type="segmentation", classes=["bg", "fg"], source={"path": "none.csv"})
    old = ModelConfig(
        image_size=32,
        encoder=EncoderConfig(name="resnet10t"),
        pixel_decoder=PixelDecoderConfig(channels=16, embed_dim=8, up_convs=2),
    )
    model = build_multitask_model(old, {"seg": build_task(spec)})
    config = {"model": old.model_dump(mode="json"), "tasks": [spec.model_dump(mode="json")]}
    del config["model"]["pixel_decoder"]["up_convs"]  # as format 1 wrote it
    path = save_checkpoint(tmp_path / "ckpt", model, config)
    written = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**written, "format_version": 1}))

    loaded, _ = load_multitask_model(path)  # strict: every weight of both convs must fit
    assert loaded.pixel_decoder is not None and len(loaded.pixel_decoder.up[0]) == 6
    image = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded("seg", image), model.eval()("seg", image))

"""ONNX export: the encoder and every task head run in onnxruntime and give PyTorch's outputs on
real images at any batch size; an encoder that cannot be traced is one line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.data import TaskDataset
from medfoundry.data.record import Record
from medfoundry.recipes import pretrain
from medfoundry.recipes.export import to_onnx
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.training.model_loading import load_multitask_model
from tests.conftest import tiny_config
from tests.evaluation.conftest import tasks_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _tasks(small_db: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [t for t in tasks_of(small_db) if t["name"] in names]


def _pretrain(root: Path, tasks: list[dict[str, Any]], **overrides: Any) -> Path:
    (root / "c.yaml").write_text(yaml.safe_dump(tiny_config(root / "run", tasks, **overrides)))
    return pretrain.run(load_pretrain_config(root / "c.yaml")) / "checkpoints" / "last"


@pytest.fixture(scope="module")
def exported(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = _pretrain(
        root, _tasks(small_db, ("nuclei_seg", "nuclei_det", "imaging_technique")), **{"training.max_steps": 2}
    )
    return checkpoint, to_onnx.run(checkpoint, root / "onnx")


def test_onnxruntime_gives_pytorchs_outputs_for_encoder_and_every_head(
    exported: tuple[Path, Path], small_db: Path
) -> None:
    checkpoint, folder = exported
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.onnx")) == [
        "encoder.onnx",
        "heads/imaging_technique.onnx",
        "heads/nuclei_det.onnx",
        "heads/nuclei_seg.onnx",
    ]
    config = json.loads((folder / "onnx_config.json").read_text())
    assert config["encoder"]["inputs"] == {"images": ["batch", 3, 32, 32]}
    assert config["heads"]["imaging_technique"]["classes"][0] == "h_and_e"
    assert config["heads"]["nuclei_det"]["strides"] == [8, 16, 32]
    model, _ = load_multitask_model(checkpoint)
    images = sorted((small_db.parent / "images" / "skimage").glob("*.png"))
    encoder = onnxruntime.InferenceSession(str(folder / "encoder.onnx"))
    heads = {
        name: onnxruntime.InferenceSession(str(folder / "heads" / f"{name}.onnx"))
        for name in ("imaging_technique", "nuclei_seg", "nuclei_det")
    }
    for batch in (1, 4):  # the graphs were traced at batch 2
        records = [Record(p, None, i) for i, p in enumerate(images[:batch])]
        dataset = TaskDataset(records, "image", 32, augment=False)
        x = torch.stack([dataset[i][0] for i in range(batch)])
        embedding, *pyramid = encoder.run(None, {"images": x.numpy()})
        with torch.no_grad():
            features = model.encoder(x)
            expected = {
                "embedding": model.embed(x),
                "imaging_technique": model("imaging_technique", x),
                "nuclei_seg": model("nuclei_seg", x),
            }
            det = model("nuclei_det", x)
        feeds = {f"features_{i}": f for i, f in enumerate(pyramid)}
        got = {
            "embedding": embedding,
            "imaging_technique": heads["imaging_technique"].run(None, {"embedding": embedding})[0],
            "nuclei_seg": heads["nuclei_seg"].run(None, feeds)[0],
        }
        for name, value in expected.items():
            assert got[name].shape == tuple(value.shape)
            assert np.abs(got[name] - value.numpy()).max() <= 1e-4, name
        for ours, theirs in zip(features, pyramid, strict=True):
            assert np.abs(ours.numpy() - theirs).max() <= 1e-4
        names = [o.name for o in heads["nuclei_det"].get_outputs()]
        outputs = dict(zip(names, heads["nuclei_det"].run(None, feeds), strict=True))
        for level in range(3):
            for part in ("cls_logits", "box_regression", "centerness"):
                reference = getattr(det, part)[level].numpy()
                assert np.abs(outputs[f"{part}_{level}"] - reference).max() <= 1e-4, (part, level)


def test_an_encoder_that_cannot_be_traced_is_one_line_and_writes_nothing(
    small_db: Path, tmp_path: Path
) -> None:
    # timm's nest_tiny runs attention on 5D tensors (blocks x tokens), which torch.onnx cannot
    # translate (its attention op takes 4D query, key and value only)
    checkpoint = _pretrain(
        tmp_path,
        _tasks(small_db, ("imaging_technique",)),
        **{"training.max_steps": 1, "model.encoder.name": "nest_tiny"},
    )
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--onnx", str(tmp_path / "onnx")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(
        "error: export --onnx: the encoder 'nest_tiny' cannot be exported to ONNX (AssertionError: only 4D"
    ), result.output
    assert not (tmp_path / "onnx").exists() and not (tmp_path / ".onnx.tmp").exists()

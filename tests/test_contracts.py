"""Contract tests over every registered task type and every source type.

Each task type goes through what every command does with a task on real packaged images (the
small corpus's tiles): a pretraining step, validate-data, embed, a study cell (or a one-line
refusal when the type has nothing to evaluate), the ONNX export and ``predict`` on new images
(a label-free type refuses to predict). A newly registered type
fails ``test_every_registered_task_type_has_an_example`` until it is given an example task
below. Each source type (one valid task of it on crops of real packaged images, from
``tests/cli/corpus_inputs.py``) goes through a pretraining step, validate-data and embed, and its
path fields are resolved against the task database that lists it, and the way it has
``predict`` read new volumes (``prediction_reading``) is its own slicing; a new source type fails
``test_every_source_type_has_an_example`` until it has an example.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from medfoundry.data.sources import SOURCE_TYPES, PredictionReading
from medfoundry.errors import ConfigError
from medfoundry.evaluation.study_cells import read_results
from medfoundry.recipes import evaluate, predict, pretrain, validate_data
from medfoundry.recipes.evaluate.config import StudyConfig
from medfoundry.recipes.export import to_onnx
from medfoundry.recipes.predict import embed
from medfoundry.recipes.predict.embed import EmbedConfig
from medfoundry.recipes.pretrain.config import load_pretrain_config, read_tasks
from medfoundry.tasks import EVALUATION_MODES, TASK_TYPES, TaskSpec, build_task
from medfoundry.tasks.scores import LOWER_IS_BETTER
from tests.conftest import tiny_config
from tests.evaluation.conftest import study_config

EXAMPLE_TASKS = {  # task type -> the example task of that type in ``contract_db``
    "classification": "imaging_technique",
    "detection": "nuclei_det",
    "masked_image": "tiles",
    "multilabel": "stained",
    "segmentation": "nuclei_seg",
    "two_view": "views",
}
TYPES = TASK_TYPES.names()


def test_every_registered_task_type_has_an_example() -> None:
    assert sorted(EXAMPLE_TASKS) == TYPES


@pytest.mark.parametrize("type_name", TYPES)
def test_a_task_type_states_what_evaluation_needs(type_name: str) -> None:
    cls = TASK_TYPES.get(type_name)
    spec = TaskSpec(name="t", type=type_name, classes=[] if cls.target == "image" else ["a", "b"],
                    source={"path": "t.csv"})  # fmt: skip
    task = build_task(spec)
    assert set(task.evaluation_modes) <= set(EVALUATION_MODES)
    metrics = task.metrics().compute()  # an empty accumulator names its metrics
    if task.primary_metric is None:
        assert task.evaluation_modes == () and task.probe_targets is None
    else:
        assert task.primary_metric in metrics and task.primary_metric not in LOWER_IS_BETTER
        assert task.evaluation_modes
    probes = {"linear", "knn"} & set(task.evaluation_modes)
    assert not probes or (task.feature == "pooled" and task.probe_targets is not None)
    assert task.ignore_index is None or not 0 <= task.ignore_index < spec.num_classes
    assert task.postprocess_text


@pytest.mark.parametrize("source_type", sorted(SOURCE_TYPES))
def test_source_paths_are_resolved_against_the_task_database(source_type: str, tmp_path: Path) -> None:
    fields = SOURCE_TYPES[source_type].path_fields()
    assert fields, f"source type {source_type} reads no files?"
    source = {"type": source_type, **{name: f"data/{name}" for name in fields}}
    task = {"name": "t", "type": "classification", "source": source}
    (resolved,) = read_tasks([task], tmp_path / "db.yaml")
    assert {name: resolved["source"][name] for name in fields} == {
        name: str((tmp_path / "data" / name).resolve()) for name in fields
    }


@pytest.fixture(scope="module")
def contract_db(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small corpus's tasks plus a multilabel, a masked-image and a two-view task on its tiles."""
    root = small_db.parent
    with (root / "imaging_technique.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    folder = tmp_path_factory.mktemp("contract")
    with (folder / "stained.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "stained", "microscope", "split"])
        for r in rows:
            stained = int(r["label"] in ("immunohistochemistry", "h_and_e"))
            writer.writerow([str(root / r["image"]), stained, int(r["label"] != "fundus"), r["split"]])
    tasks = yaml.safe_load((root / "tasks.yaml").read_text())["tasks"]
    for task in tasks:
        task["source"]["path"] = str(root / task["source"]["path"])
    tasks += [
        {"name": "stained", "type": "multilabel", "classes": ["stained", "microscope"],
         "source": {"path": str(folder / "stained.csv")}},
        {"name": "tiles", "type": "masked_image", "source": {"path": str(root / "imaging_technique.csv")}},
        {"name": "views", "type": "two_view", "options": {"expander_dim": 32},
         "source": {"path": str(root / "imaging_technique.csv")}},
    ]  # fmt: skip
    (folder / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    return folder / "tasks.yaml"


@pytest.fixture(scope="module")
def contract_run(contract_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract_run")
    cfg = tiny_config(root / "run", str(contract_db), **{"training.max_steps": 1})
    cfg["model"]["masked_image"] = {"decoder_dim": 16, "decoder_depth": 1, "decoder_num_heads": 1}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return pretrain.run(load_pretrain_config(root / "c.yaml"))


@pytest.fixture(scope="module")
def contract_onnx(contract_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = to_onnx.run(contract_run / "checkpoints" / "last", tmp_path_factory.mktemp("onnx") / "onnx")
    config: dict[str, Any] = json.loads((out / "onnx_config.json").read_text())
    return config


def _task(contract_db: Path, type_name: str) -> dict[str, Any]:
    tasks = yaml.safe_load(contract_db.read_text())["tasks"]
    return next(t for t in tasks if t["name"] == EXAMPLE_TASKS[type_name])


@pytest.mark.integration
@pytest.mark.parametrize("type_name", TYPES)
def test_pretrain_step_validate_data_and_embed(
    type_name: str, contract_db: Path, contract_run: Path, tmp_path: Path
) -> None:
    name = EXAMPLE_TASKS[type_name]
    logs = [json.loads(line) for line in (contract_run / "metrics.jsonl").read_text().splitlines()]
    (first,) = [row for row in logs if row["kind"] == "train"]
    assert math.isfinite(first[f"loss/{name}"]) and 0.3 < first[f"loss/{name}"] < 2.0  # about 1

    cfg = validate_data.ValidateDataConfig.model_validate({"tasks": [_task(contract_db, type_name)]})
    (summary,) = validate_data.run(cfg)
    assert summary.name == name and sum(summary.split_sizes.values()) > 0

    out = embed.run(
        EmbedConfig(encoder=str(contract_run / "checkpoints" / "last"), data=contract_db, task=name,
                    output=tmp_path / "f.npz", cache_dir=tmp_path / "cache")
    )  # fmt: skip
    with np.load(out) as data:
        assert data["features"].shape == (sum(summary.split_sizes.values()), 512)


@pytest.mark.integration
@pytest.mark.parametrize("type_name", TYPES)
def test_study_cell_and_export(
    type_name: str, contract_db: Path, contract_run: Path, contract_onnx: dict[str, Any], tmp_path: Path
) -> None:
    task = _task(contract_db, type_name)
    checkpoint = contract_run / "checkpoints" / "last"
    cls = TASK_TYPES.get(type_name)
    cfg = study_config(
        tmp_path / "study", [task], checkpoint, encoders=[{"name": "pretrained", "source": str(checkpoint)}],
        fractions=[1.0], seeds=1, baselines=[], modes=list(cls.evaluation_modes[:1]) or ["linear"],
    )  # fmt: skip
    if cls.primary_metric is None:
        with pytest.raises(ConfigError, match=rf"none of the tasks \({task['name']}\) can be evaluated"):
            evaluate.run(StudyConfig.model_validate(cfg))
    else:
        rows = read_results(evaluate.run(StudyConfig.model_validate(cfg)) / "results.csv")
        (cell,) = [r for r in rows if r["metric"] == cls.primary_metric]
        assert cell["mode"] == cls.evaluation_modes[0] and math.isfinite(cell["value"])
    heads = contract_onnx["heads"]
    assert (task["name"] in heads) == (cls.primary_metric is not None)
    if task["name"] in heads:
        assert heads[task["name"]]["postprocess"] == cls.postprocess_text


@pytest.fixture(scope="module")
def new_images(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A folder of three real packaged images (the demo's crops), as new input to ``predict``."""
    folder = tmp_path_factory.mktemp("new_images")
    for image in sorted((small_db.parent / "images" / "skimage").glob("*.png"))[:3]:
        shutil.copy(image, folder / image.name)
    return sorted(folder.iterdir())


def _predicted_ids(out: Path) -> list[str]:
    """The ids of the images that ``predict`` wrote a prediction for, whatever the form."""
    if (out / "predictions.csv").is_file():
        return sorted(row["id"] for row in csv.DictReader((out / "predictions.csv").open()))
    if (out / "masks.csv").is_file():
        return sorted(row["id"] for row in csv.DictReader((out / "masks.csv").open()))
    coco = json.loads((out / "detections.json").read_text())
    return sorted(image["file_name"] for image in coco["images"])


@pytest.mark.integration
@pytest.mark.parametrize("type_name", TYPES)
def test_predict_writes_a_prediction_for_every_new_image(
    type_name: str, contract_run: Path, new_images: list[Path], tmp_path: Path
) -> None:
    name = EXAMPLE_TASKS[type_name]
    cfg = predict.PredictConfig(
        checkpoint=contract_run / "checkpoints" / "last", input=new_images[0].parent,
        output=tmp_path / "out", task=name, progress=False,
    )  # fmt: skip
    cls = TASK_TYPES.get(type_name)
    if cls.primary_metric is None:  # label-free: no head to predict with
        with pytest.raises(ConfigError, match=rf"no task '{name}' in this checkpoint"):
            predict.run(cfg)
        task = build_task(TaskSpec(name=name, type=type_name, source={"path": "t.csv"}))
        with pytest.raises(ValueError, match="predicts nothing"):
            task.predict(None, image_size=(32, 32))
        return
    out = predict.run(cfg)
    metadata = json.loads((out / "prediction.json").read_text())
    assert metadata["type"] == type_name and metadata["files"]
    assert all((out / file).is_file() and (out / file).stat().st_size > 0 for file in metadata["files"])
    assert _predicted_ids(out) == [image.name for image in new_images]


SOURCE_EXAMPLES = {  # source type -> the task of that source type in ``all_sources_db``
    "coco": "coco",
    "dicom": "dcm",
    "image_folder": "folders",
    "manifest": "cls",
    "medmnist": "mnist",
    "segmentation_folders": "pairs",
    "volume": "vol",
}


def test_every_source_type_has_an_example() -> None:
    assert sorted(SOURCE_EXAMPLES) == sorted(SOURCE_TYPES)


@pytest.fixture(scope="module")
def all_sources_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One valid task of every source type, on crops of real packaged images."""
    from tests.cli.corpus_inputs import Inputs, load_real_pixels

    inputs = Inputs(tmp_path_factory.mktemp("all_sources"), load_real_pixels())
    database = inputs.database(*inputs.all_sources())
    volumes = inputs.folder / "vol"  # a second volume: volumes are split whole, one cannot be
    for part in ("image", "label"):
        shutil.copy(volumes / f"case_{part}.nii.gz", volumes / f"other_{part}.nii.gz")
    tasks = read_tasks(str(database), database)  # absolute source paths
    database.write_text(yaml.safe_dump({"tasks": tasks}))
    return database


@pytest.fixture(scope="module")
def all_sources_run(all_sources_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("all_sources_run")
    cfg = tiny_config(root / "run", str(all_sources_db), **{"training.max_steps": 1, "data.batch_size": 2})
    cfg["data"]["val_fraction"] = 0.25
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return pretrain.run(load_pretrain_config(root / "c.yaml"))


SLICING = {"axis": "sagittal", "spacing_mm": (0.5, 0.75), "volume_index": 1}
"""Settings other than the defaults, for the sources that slice volumes (those with these fields)."""


@pytest.mark.parametrize("source_type", sorted(SOURCE_TYPES))
def test_a_source_type_has_predict_read_volumes_as_it_slices_its_own(source_type: str) -> None:
    cls = SOURCE_TYPES[source_type]
    own = {name: value for name, value in SLICING.items() if name in cls.model_fields}
    paths = {name: f"data/{name}" for name in cls.path_fields()}
    reading = cls.model_validate({"type": source_type, **paths, **own}).prediction_reading()
    assert isinstance(reading, PredictionReading)
    assert reading == PredictionReading(**own)  # its own slicing; the defaults for 2D sources


@pytest.mark.integration
@pytest.mark.parametrize("source_type", sorted(SOURCE_TYPES))
def test_every_source_type_pretrains_validates_and_embeds(
    source_type: str, all_sources_db: Path, all_sources_run: Path, tmp_path: Path
) -> None:
    name = SOURCE_EXAMPLES[source_type]
    (task,) = [t for t in yaml.safe_load(all_sources_db.read_text())["tasks"] if t["name"] == name]
    assert task["source"].get("type", "manifest") == source_type
    logs = [json.loads(line) for line in (all_sources_run / "metrics.jsonl").read_text().splitlines()]
    (first,) = [row for row in logs if row["kind"] == "train"]
    assert math.isfinite(first[f"loss/{name}"])

    cfg = validate_data.ValidateDataConfig.model_validate({"tasks": [task], "image_size": 32})
    (summary,) = validate_data.run(cfg)
    out = embed.run(
        EmbedConfig(encoder=str(all_sources_run / "checkpoints" / "last"), data=all_sources_db, task=name,
                    output=tmp_path / "f.npz", cache_dir=tmp_path / "cache")
    )  # fmt: skip
    with np.load(out) as data:
        assert data["features"].shape[0] == sum(summary.split_sizes.values()) > 0

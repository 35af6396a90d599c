"""Task types defined and registered here, in a test module, run through pretraining, a study,
an ONNX export and ``predict`` with no other file changed: recipes and evaluation ask the task,
never its type name (the contract of ``medfoundry.tasks.task_type``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict
from torch import nn

from medfoundry.data.record import TargetKind
from medfoundry.evaluation.study_cells import read_results
from medfoundry.recipes import evaluate, predict, pretrain
from medfoundry.recipes.evaluate.config import StudyConfig
from medfoundry.recipes.export import to_onnx
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.tasks import (
    TASK_TYPES,
    BoxPredictions,
    ClassificationTask,
    DetectionTask,
    TaskMetrics,
    TaskSpec,
    build_task,
)
from medfoundry.tasks.detection import BoxTarget, FCOSOutput
from medfoundry.tasks.task_type import EvaluationMode, FeatureKind, ProbeTargets
from tests.conftest import tiny_config
from tests.evaluation.conftest import study_config, tasks_of

TOY = "brier_classification"


class BrierOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrierClassificationTask:
    """One label per image, learnt with the Brier score (squared error of the softmax against the
    one-hot label) divided by its value at a uniform prediction, ``1 - 1/C``: exactly 1 at chance."""

    feature: ClassVar[FeatureKind] = "pooled"
    target: ClassVar[TargetKind] = "label"
    primary_metric: ClassVar[str | None] = "accuracy"
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]] = ("linear", "finetune")
    probe_targets: ClassVar[ProbeTargets | None] = "one_label"
    postprocess_text: ClassVar[str] = "softmax over the K logits"
    ignore_index: ClassVar[None] = None

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        # the metrics of a classification task, by composition (no inheritance between task types)
        self._classification = ClassificationTask(spec.model_copy(update={"type": "classification"}))

    def build_head(self, in_channels: int) -> nn.Module:
        return nn.Linear(in_channels, self.spec.num_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        c = self.spec.num_classes
        brier = (outputs.float().softmax(dim=1) - F.one_hot(targets, c)).pow(2).sum(dim=1).mean()
        return brier / (1 - 1 / c)

    def metrics(self) -> TaskMetrics:
        return self._classification.metrics()

    def collate_targets(self, targets: Sequence[int]) -> torch.Tensor:
        return torch.as_tensor(list(targets), dtype=torch.long)


@pytest.fixture(scope="module")
def toy_registered() -> Iterator[None]:
    TASK_TYPES.register(TOY)(BrierClassificationTask)
    yield
    TASK_TYPES.unregister(TOY)


@pytest.fixture(scope="module")
def toy_task(small_db: Path, toy_registered: None) -> dict[str, object]:
    modality = next(t for t in tasks_of(small_db) if t["name"] == "imaging_technique")
    return {**modality, "name": "technique", "type": TOY}


def test_the_toy_loss_is_one_at_chance(toy_registered: None) -> None:
    spec = TaskSpec(name="t", type=TOY, classes=["a", "b", "c"], source={"path": "t.csv"})
    task = build_task(spec)
    assert task.loss(torch.zeros(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])).item() == pytest.approx(1.0)


@pytest.mark.integration
def test_a_task_type_registered_in_a_test_pretrains_runs_a_study_and_exports(
    toy_task: dict[str, object], tmp_path: Path
) -> None:
    cfg = tiny_config(tmp_path / "run", [toy_task], **{"training.max_steps": 2})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = pretrain.run(load_pretrain_config(tmp_path / "c.yaml"))
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in logs if row["kind"] == "train"]
    assert [row["step"] for row in train] == [1, 2]
    assert 0.8 < train[0]["loss/technique"] < 1.2  # a fresh head is near chance: about 1
    checkpoint = run_dir / "checkpoints" / "last"

    study = evaluate.run(
        StudyConfig.model_validate(
            study_config(
                tmp_path / "study",
                [toy_task],
                checkpoint,
                encoders=[{"name": "pretrained", "source": str(checkpoint)}],
                fractions=[1.0],
                seeds=1,
                baselines=[],
            )
        )
    )
    rows = read_results(study / "results.csv")
    assert {(r["mode"], r["metric"]) for r in rows if r["metric"] == "accuracy"} == {
        ("linear", "accuracy"),
        ("finetune", "accuracy"),
    }  # the modes the type allows, scored with its metrics

    exported = to_onnx.run(checkpoint, tmp_path / "onnx")
    onnx_config = json.loads((exported / "onnx_config.json").read_text())
    head = onnx_config["heads"]["technique"]
    assert head["type"] == TOY and head["postprocess"] == "softmax over the K logits"
    assert (tmp_path / "onnx" / "heads" / "technique.onnx").is_file()


ONE_BOX = "one_box_detection"


class OneBoxDetectionTask:
    """At most one object per image: FCOS detection (by composition) that predicts only each
    image's highest-scoring box."""

    feature: ClassVar[FeatureKind] = "pyramid"
    target: ClassVar[TargetKind] = "boxes"
    primary_metric: ClassVar[str | None] = "map_50"
    evaluation_modes: ClassVar[tuple[EvaluationMode, ...]] = ("frozen-decoder", "finetune")
    probe_targets: ClassVar[ProbeTargets | None] = None
    postprocess_text: ClassVar[str] = "FCOS, then each image's highest-scoring detection"
    ignore_index: ClassVar[None] = None

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self._detection = DetectionTask(spec.model_copy(update={"type": "detection"}))

    def build_head(self, in_channels: int) -> nn.Module:
        return self._detection.build_head(in_channels)

    def loss(self, outputs: FCOSOutput, targets: Sequence[BoxTarget]) -> torch.Tensor:
        return self._detection.loss(outputs, targets)

    def metrics(self) -> TaskMetrics:
        return self._detection.metrics()

    def collate_targets(self, targets: Sequence[BoxTarget]) -> list[BoxTarget]:
        return self._detection.collate_targets(targets)

    def predict(self, outputs: FCOSOutput, *, image_size: tuple[int, int]) -> BoxPredictions:
        found = self._detection.predict(outputs, image_size=image_size).detections
        return BoxPredictions([{key: values[:1] for key, values in d.items()} for d in found])  # by score


@pytest.fixture
def one_box_registered() -> Iterator[None]:
    TASK_TYPES.register(ONE_BOX)(OneBoxDetectionTask)
    yield
    TASK_TYPES.unregister(ONE_BOX)


@pytest.mark.integration
def test_a_box_task_type_registered_in_a_test_predicts_its_own_boxes(
    small_db: Path, one_box_registered: None, tmp_path: Path
) -> None:
    nuclei = next(t for t in tasks_of(small_db) if t["name"] == "nuclei_det")
    task = {**nuclei, "name": "nucleus", "type": ONE_BOX}
    cfg = tiny_config(tmp_path / "run", [task], **{"training.max_steps": 1})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    checkpoint = pretrain.run(load_pretrain_config(tmp_path / "c.yaml")) / "checkpoints" / "last"
    new = tmp_path / "new"  # three real nuclei tiles, as new images
    new.mkdir()
    images = sorted((small_db.parent / "images" / "stardist").glob("nuclei_*.png"))[:3]
    for image in images:
        shutil.copy(image, new / image.name)

    out = predict.run(
        predict.PredictConfig(checkpoint=checkpoint, input=new, output=tmp_path / "out", progress=False)
    )
    coco = json.loads((out / "detections.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == [p.name for p in images]
    per_image = [[a for a in coco["annotations"] if a["image_id"] == image["id"]] for image in coco["images"]]
    # a fresh FCOS head scores every point near its prior, above the threshold: detection would
    # write up to 100 boxes per image; this type writes its one best
    assert [len(found) for found in per_image] == [1, 1, 1]
    for (found,), image in zip(per_image, coco["images"], strict=True):
        x, y, w, h = found["bbox"]
        assert 0 < found["score"] <= 1 and found["category_id"] == 1
        assert 0 <= x and 0 <= y and x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01

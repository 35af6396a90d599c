"""Recipe: run a trained task head on new images and scans (``medfoundry predict CHECKPOINT INPUT``).

The checkpoint's model (``load_multitask_model``) and the task's own preprocessing (intensity,
channels, fit; from its spec in the checkpoint) are reused; INPUT is read by the data layer
(``predict.inputs``). Every image is decoded and fitted as the task's evaluation does it, run
through the encoder, shared decoder and the task's head in batches, and the prediction is
brought back onto the image's own grid (``predict.outputs``): probabilities per class, masks
(PNG per image; for volumes, one NIfTI label volume on the input's voxel grid, predicted slice
by slice along the task's axis) or COCO detections with scores.

The output folder is written under a temporary name and moved into place at the end: a run
that fails (an unreadable file half-way) leaves nothing behind. ``prediction.json`` records the
checkpoint, task, classes, input and preprocessing.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import MofNCompleteColumn, Progress
from torch.utils.data import DataLoader

from medfoundry.errors import ConfigError, DataError
from medfoundry.output_folders import check_output_folder, write_marker
from medfoundry.recipes.predict.inputs import PredictionImages, as_geometry, prediction_records
from medfoundry.recipes.predict.outputs import PredictedBatch, prediction_writer
from medfoundry.safe_writes import write_folder_atomically
from medfoundry.tasks import TASK_TYPES, TaskSpec, build_task
from medfoundry.training.checkpoint import load_checkpoint_config
from medfoundry.training.checkpoint_config import library_versions
from medfoundry.training.device import resolve_device
from medfoundry.training.model_loading import load_multitask_model

__all__ = ["PredictConfig", "run", "supervised_tasks"]

log = logging.getLogger(__name__)


class PredictConfig(BaseModel):
    """What to predict with which checkpoint, and where to write it.

    Args:
        checkpoint: A medfoundry checkpoint folder.
        input: An image, DICOM file or series, NIfTI/NRRD volume, CSV/TSV manifest or folder.
        output: Folder to write: new, empty, or an earlier prediction's (replaced).
        task: The checkpoint's task whose head predicts (may be left out when it has one).
        volume_index: Which 3D volume of 4D files; ``None``: the task's own source's setting.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers decoding images.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: Show a progress bar.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path
    input: Path
    output: Path
    task: str | None = None
    volume_index: int | None = Field(default=None, ge=0)
    batch_size: int = Field(default=16, ge=1)
    num_workers: int = Field(default=0, ge=0)
    device: str = "auto"
    progress: bool = True


def run(cfg: PredictConfig) -> Path:
    """Predict ``cfg.task`` on ``cfg.input`` into ``cfg.output``; returns the output folder.

    Raises:
        ConfigError: not a checkpoint, no task head, an unknown task (before anything is read).
        DataError: an output folder that is not new, empty or an earlier prediction's
            (``output_folders``), or inside the input folder (both before anything is read), or
            the input cannot be read (nothing is written).
    """
    output = Path(cfg.output)
    check_output_folder(output, "predict")
    _check_outside_input(output, Path(cfg.input))
    device = resolve_device(cfg.device, "--device")
    config = load_checkpoint_config(cfg.checkpoint)
    spec = _chosen_task(config, cfg.task, cfg.checkpoint)
    task = build_task(spec)
    records, ids = prediction_records(cfg.input, spec, volume_index=cfg.volume_index)
    model, _ = load_multitask_model(cfg.checkpoint, device)
    image_size = int(config["model"]["image_size"])
    loader = DataLoader(
        PredictionImages(records, image_size, spec.preprocessing),
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
    )

    def write(tmp: Path) -> None:
        writer = prediction_writer(task, tmp, records, image_size=image_size)
        progress = Progress(*Progress.get_default_columns(), MofNCompleteColumn(), disable=not cfg.progress)
        bar = progress.add_task(f"predict {spec.name}", total=len(records))
        with progress, torch.inference_mode():
            for images, index, geometry, decoded in loader:
                outputs = model(spec.name, images.to(device))
                chosen = index.tolist()
                writer.add(
                    PredictedBatch(
                        records=[records[i] for i in chosen],
                        ids=[ids[i] for i in chosen],
                        outputs=outputs,
                        geometry=[as_geometry(g) for g in geometry],
                        decoded_hw=[(int(h), int(w)) for h, w in decoded.tolist()],
                    )
                )
                progress.advance(bar, len(chosen))
        files = writer.finish()
        (tmp / "prediction.json").write_text(json.dumps(_metadata(cfg, spec, image_size, files), indent=2))
        write_marker(tmp, "predict", list_files=True)

    written = write_folder_atomically(output, write)
    log.info("%d samples of %s predicted by task '%s' into %s", len(records), cfg.input, spec.name, written)
    return written


def _check_outside_input(output: Path, input_path: Path) -> None:
    """An output folder inside an input folder would be read as input by the next run.

    Raises:
        DataError: ``output`` is inside the folder ``input_path``.
    """
    if input_path.is_dir() and output.resolve().is_relative_to(input_path.resolve()):
        raise DataError(
            f"{output}: the output folder is inside the input folder {input_path}, so a rerun would "
            "read its own predictions as images; write it outside the input folder"
        )


def supervised_tasks(config: dict[str, Any]) -> list[TaskSpec]:
    """A checkpoint's tasks that have a prediction head: those with something to predict (a
    primary metric), not the label-free pretraining tasks (masked-image, two-view)."""
    specs = [TaskSpec.model_validate(t) for t in config["tasks"]]
    return [s for s in specs if TASK_TYPES.get(s.type).primary_metric is not None]


def _chosen_task(config: dict[str, Any], name: str | None, checkpoint: Path) -> TaskSpec:
    specs = supervised_tasks(config)
    if not specs:
        others = ", ".join(t["name"] for t in config["tasks"])
        raise ConfigError(
            f"{checkpoint}: the checkpoint has no task heads to predict with (its tasks {others} are "
            "label-free pretraining only); use a checkpoint of a run with a labelled task"
        )
    names = [s.name for s in specs]
    if name is None:
        if len(specs) > 1:
            raise ConfigError(f"{checkpoint}: choose a task with --task ({', '.join(names)})")
        return specs[0]
    if name not in names:
        raise ConfigError(
            f"{checkpoint}: no task '{name}' in this checkpoint (its tasks: {', '.join(names)})"
        )
    return specs[names.index(name)]


def _metadata(cfg: PredictConfig, spec: TaskSpec, image_size: int, files: list[str]) -> dict[str, Any]:
    return {
        "checkpoint": str(cfg.checkpoint),
        "input": str(cfg.input),
        "task": spec.name,
        "type": spec.type,
        "classes": spec.classes,
        "image_size": image_size,
        "preprocessing": spec.preprocessing.model_dump(mode="json"),
        "files": files,
        "versions": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }

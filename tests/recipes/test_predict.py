"""``medfoundry predict`` on real packaged images and volumes: outputs on the input's own grid,
equal to what the evaluation code computes for the same model, and one clear line for bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import yaml
from nibabel.testing import data_path as nibabel_data_path
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.data import Preprocessing, TaskDataset
from medfoundry.errors import ConfigError, DataError
from medfoundry.evaluation.finetune import score_model
from medfoundry.recipes import predict, pretrain
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training.model_loading import load_multitask_model
from tests.conftest import tiny_config
from tests.evaluation.conftest import tasks_of

pytestmark = pytest.mark.integration

MULTILABEL = {
    "stained": ("immunohistochemistry", "h_and_e"),
    "colour": ("fundus", "immunohistochemistry", "h_and_e"),
}
"""A multilabel task derived from the demo's technique labels: stained tissue, and a colour
(RGB) source image."""


NIBABEL_DATA = Path(nibabel_data_path)  # nibabel's real test volumes (anatomical.nii: MR, 2 mm)


def _pretrain(root: Path, tasks: Any, **overrides: Any) -> Path:
    cfg = tiny_config(root / "run", tasks, **overrides)
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return pretrain.run(load_pretrain_config(root / "c.yaml")) / "checkpoints" / "last"


@pytest.fixture(scope="module")
def volume_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A segmentation head trained on nibabel's real MR volume (anatomical.nii, 33x41x25, stored
    LAS) with labels of its brightest voxels; two copies of the volume, one for validation.
    ``fit: center`` at 48 px pads each 41x33 axial slice without resampling."""
    root = tmp_path_factory.mktemp("volume")
    (root / "images").mkdir(), (root / "labels").mkdir()
    volume = nib.load(NIBABEL_DATA / "anatomical.nii")
    data = np.asanyarray(volume.dataobj)
    label = (data > np.percentile(data, 70)).astype(np.uint8)
    for name in ("anat_a", "anat_b"):
        shutil.copy(NIBABEL_DATA / "anatomical.nii", root / "images" / f"{name}.nii")
        nib.save(nib.Nifti1Image(label, volume.affine), root / "labels" / f"{name}.nii.gz")
    task = {
        "name": "bright",
        "type": "segmentation",
        "classes": ["background", "bright"],
        "modality": "MR",
        "source": {"type": "volume", "images": str(root / "images"), "labels": str(root / "labels")},
        "preprocessing": {"fit": "center"},
    }
    checkpoint = _pretrain(
        root,
        [task],
        **{"model.image_size": 48, "training.max_steps": 30, "training.optimizer.lr": 3e-3},
    )
    return checkpoint, root


@pytest.fixture(scope="module")
def image_checkpoint(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every supervised task type on the demo's real microscopy images (plus a multilabel task)."""
    root = tmp_path_factory.mktemp("images")
    tasks = tasks_of(small_db)
    with (small_db.parent / "imaging_technique.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with (root / "multilabel.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "split", *MULTILABEL])
        writer.writeheader()
        for row in rows:
            labels = {name: int(row["label"] in kinds) for name, kinds in MULTILABEL.items()}
            writer.writerow({"image": str(small_db.parent / row["image"]), "split": row["split"], **labels})
    tasks.append(
        {
            "name": "looks",
            "type": "multilabel",
            "classes": list(MULTILABEL),
            "source": {"path": str(root / "multilabel.csv")},
        }
    )
    return _pretrain(root, tasks, **{"training.max_steps": 4})


def _predict(checkpoint: Path, data: Path, out: Path, task: str | None = None, **kw: Any) -> Path:
    cfg = predict.PredictConfig(
        checkpoint=checkpoint, input=data, output=out, task=task, progress=False, **kw
    )
    return predict.run(cfg)


def _dice(prediction: np.ndarray, labels: np.ndarray, cls: int) -> float:
    tp = np.sum((prediction == cls) & (labels == cls))
    fp = np.sum((prediction == cls) & (labels != cls))
    fn = np.sum((prediction != cls) & (labels == cls))
    return float(2 * tp / (2 * tp + fp + fn))


def test_volume_prediction_is_on_the_input_grid_and_its_dice_equals_the_evaluation(
    volume_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, root = volume_checkpoint
    volume = root / "images" / "anat_a.nii"
    out = _predict(checkpoint, volume, tmp_path / "out", batch_size=7)
    assert sorted(p.name for p in out.iterdir()) == [
        ".medfoundry-output.json",
        "masks.csv",
        "prediction.json",
        "volumes",
    ]
    written = nib.load(out / "volumes" / "anat_a.nii.gz")
    source = nib.load(volume)
    assert written.shape == source.shape == (33, 41, 25)
    np.testing.assert_allclose(written.affine, source.affine)
    assert nib.aff2axcodes(written.affine) == ("L", "A", "S")  # stored LAS, as the input
    predicted = np.asanyarray(written.dataobj)
    labels = np.asanyarray(nib.load(root / "labels" / "anat_a.nii.gz").dataobj)
    dice = _dice(predicted, labels, 1)
    assert 0.2 < dice < 1.0  # the head learnt something, but not everything

    model, config = load_multitask_model(checkpoint)
    spec = TaskSpec.model_validate(config["tasks"][0])
    task = build_task(spec)
    records = [
        r
        for r in spec.source.scan(
            "mask", classes=spec.classes, preprocessing=spec.preprocessing, ignore_index=255
        ).records
        if r.image.name == "anat_a.nii"
    ]
    assert len(records) == 25
    metrics = score_model(
        model, "bright", task, records=records, image_size=48, batch_size=5, preprocessing=spec.preprocessing
    ).compute()
    assert metrics["dice/bright"] == pytest.approx(dice, abs=1e-12)
    assert metrics["mean_dice"] == pytest.approx(dice, abs=1e-12)


def test_a_dicom_series_becomes_one_label_volume_on_the_series_grid(
    volume_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    """CT_small's real pixels as a 4-slice series 5 mm apart, predicted by the MR head (only the
    geometry is checked: shape and affine from the DICOM headers)."""
    checkpoint, _ = volume_checkpoint
    series = tmp_path / "series"
    series.mkdir()
    uid = generate_uid()
    for k in range(4):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * k]
        ds.save_as(series / f"IM{k:04d}")
    out = _predict(checkpoint, series, tmp_path / "out")
    rows = list(csv.DictReader((out / "masks.csv").open()))
    assert [r["mask"] for r in rows] == ["volumes/IM0000.nii.gz"]
    written = nib.load(out / rows[0]["mask"])
    ds = pydicom.dcmread(series / "IM0000")
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    # stored as (column, row, slice); DICOM's LPS patient axes become RAS by flipping x and y
    expected = np.array([[-col_mm, 0, 0, -x], [0, -row_mm, 0, -y], [0, 0, 5.0, z], [0, 0, 0, 1]])
    assert written.shape == (128, 128, 4)
    np.testing.assert_allclose(written.affine, expected, atol=1e-4)


def test_outputs_stay_in_their_folder_and_never_share_a_file(
    volume_checkpoint: tuple[Path, Path], image_checkpoint: Path, small_db: Path, tmp_path: Path
) -> None:
    """A manifest row that goes up a folder, two volumes with one stem, and an output folder
    inside the input folder: no user file is touched and no sample loses its file."""
    checkpoint, root = volume_checkpoint
    volumes = tmp_path / "vols"
    volumes.mkdir()
    shutil.copy(root / "images" / "anat_a.nii", volumes / "head.nii")
    source = nib.load(root / "images" / "anat_a.nii")
    flipped = np.asanyarray(source.dataobj)[::-1].copy()
    nib.save(nib.Nifti1Image(flipped, source.affine), volumes / "head.nii.gz")
    out = _predict(checkpoint, volumes, tmp_path / "vol_out")
    rows = {r["id"]: r["mask"] for r in csv.DictReader((out / "masks.csv").open())}
    assert rows == {"head.nii": "volumes/head.nii.gz", "head.nii.gz": "volumes/head-2.nii.gz"}
    first, second = (np.asanyarray(nib.load(out / rows[k]).dataobj) for k in ("head.nii", "head.nii.gz"))
    assert not np.array_equal(first, second)  # each volume's own prediction

    images, lists = tmp_path / "imgs", tmp_path / "proj" / "lists"
    images.mkdir(), lists.mkdir(parents=True)
    shutil.copy(small_db.parent / "images" / "stardist" / "nuclei_y000_x064.png", images / "a.png")
    (images / "a.png.png").write_text("the user's own file")
    (lists / "m.csv").write_text("image\n../../imgs/a.png\n")
    out = _predict(image_checkpoint, lists / "m.csv", tmp_path / "seg_out", task="nuclei_seg")
    assert (images / "a.png.png").read_text() == "the user's own file"
    rows = {r["id"]: r["mask"] for r in csv.DictReader((out / "masks.csv").open())}
    assert rows == {"../../imgs/a.png": "masks/imgs/a.png.png"}
    assert np.asarray(Image.open(out / rows["../../imgs/a.png"])).shape == (64, 64)

    with pytest.raises(DataError, match=r"imgs/pred: the output folder is inside the input folder"):
        _predict(image_checkpoint, images, images / "pred", task="nuclei_seg")
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "a.png.png"]


def test_a_4d_file_is_predicted_at_the_volume_index_given(
    volume_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, root = volume_checkpoint
    source = nib.load(root / "images" / "anat_a.nii")
    data = np.asanyarray(source.dataobj)
    flipped = data[::-1].copy()
    nib.save(nib.Nifti1Image(np.stack([data, flipped], axis=-1), source.affine), tmp_path / "run.nii.gz")
    nib.save(nib.Nifti1Image(flipped, source.affine), tmp_path / "flipped.nii.gz")
    with pytest.raises(DataError, match=r"the file is 4D .*--volume-index"):
        _predict(checkpoint, tmp_path / "run.nii.gz", tmp_path / "none")
    picked = _predict(checkpoint, tmp_path / "run.nii.gz", tmp_path / "picked", volume_index=1)
    alone = _predict(checkpoint, tmp_path / "flipped.nii.gz", tmp_path / "alone")
    predicted = np.asanyarray(nib.load(picked / "volumes" / "run.nii.gz").dataobj)
    assert predicted.shape == data.shape
    np.testing.assert_array_equal(
        predicted, np.asanyarray(nib.load(alone / "volumes" / "flipped.nii.gz").dataobj)
    )


def test_every_task_type_on_images_a_folder_and_a_manifest(
    image_checkpoint: Path, small_db: Path, tmp_path: Path
) -> None:
    model, config = load_multitask_model(image_checkpoint)
    size = config["model"]["image_size"]
    folder = small_db.parent / "images" / "skimage"

    # classification on a folder: every class's probability, equal to the model on TaskDataset images
    out = _predict(image_checkpoint, folder, tmp_path / "cls", task="imaging_technique", batch_size=8)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    images = sorted(folder.glob("*.png"))
    assert [r["id"] for r in rows] == [p.name for p in images]
    classes = config["tasks"][[t["name"] for t in config["tasks"]].index("imaging_technique")]["classes"]
    probabilities = np.array([[float(r[f"probability/{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    from medfoundry.data.record import Record

    dataset = TaskDataset(
        [Record(p, None, i) for i, p in enumerate(images[:6])], "image", size, augment=False
    )
    with torch.no_grad():
        reference = model("imaging_technique", torch.stack([dataset[i][0] for i in range(6)])).softmax(dim=1)
    np.testing.assert_allclose(probabilities[:6], reference.numpy(), atol=1e-5)
    assert [r["predicted"] for r in rows[:6]] == [classes[int(i)] for i in reference.argmax(dim=1)]

    # multilabel on a manifest: sigmoid probabilities, predicted = classes at >= 0.5
    manifest = tmp_path / "some.csv"
    manifest.write_text("image\n" + "\n".join(str(p) for p in images[:5]) + "\n")
    out = _predict(image_checkpoint, manifest, tmp_path / "multi", task="looks")
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 5 and set(rows[0]) == {"id", "predicted", "probability/stained", "probability/colour"}
    for row in rows:
        above = [c for c in MULTILABEL if float(row[f"probability/{c}"]) >= 0.5]
        assert row["predicted"] == "|".join(above)

    # segmentation on one image of another size: a mask of the image's own size
    big = tmp_path / "big.png"  # a real nuclei tile, resized to another size and aspect
    Image.open(small_db.parent / "images" / "stardist" / "nuclei_y000_x064.png").resize((70, 50)).save(big)
    out = _predict(image_checkpoint, big, tmp_path / "seg", task="nuclei_seg")
    mask = np.asarray(Image.open(out / "masks" / "big.png.png"))
    assert mask.shape == (50, 70) and set(np.unique(mask)) <= {0, 1}
    assert json.loads((out / "prediction.json").read_text())["classes"] == ["background", "nucleus"]

    # detection: COCO that pycocotools loads, boxes inside each image
    out = _predict(image_checkpoint, big, tmp_path / "det", task="nuclei_det")
    from pycocotools.coco import COCO

    coco = COCO(str(out / "detections.json"))
    assert coco.imgs[1]["width"] == 70 and coco.imgs[1]["height"] == 50
    for ann in coco.anns.values():
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 70.01 and y + h <= 50.01 and 0 < ann["score"] <= 1


def test_bad_input_gives_one_line_and_writes_nothing(
    image_checkpoint: Path, small_db: Path, tmp_path: Path
) -> None:
    folder = small_db.parent / "images" / "skimage"
    with pytest.raises(ConfigError, match=r"no task 'organs' in this checkpoint \(its tasks: nuclei_seg, "):
        _predict(image_checkpoint, folder, tmp_path / "a", task="organs")
    with pytest.raises(ConfigError, match="choose a task with --task"):
        _predict(image_checkpoint, folder, tmp_path / "a")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="notes.txt: cannot read this input"):
        _predict(image_checkpoint, tmp_path / "notes.txt", tmp_path / "a", task="imaging_technique")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    shutil.copy(next(folder.glob("*.png")), broken / "b.png")
    with pytest.raises(DataError, match="a.png: cannot decode image"):
        _predict(image_checkpoint, broken, tmp_path / "a", task="imaging_technique")
    assert not (tmp_path / "a").exists() and not any(p.name.startswith(".a") for p in tmp_path.iterdir())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(DataError, match="full: output folder exists and is not empty"):
        _predict(image_checkpoint, folder, tmp_path / "full", task="imaging_technique")


def test_a_checkpoint_without_heads_is_refused(small_db: Path, tmp_path: Path) -> None:
    tiles = str(small_db.parent / "all_images.csv")
    mim = [{"name": "tiles", "type": "masked_image", "source": {"path": tiles}}]
    checkpoint = _pretrain(
        tmp_path,
        mim,
        **{
            "training.max_steps": 1,
            "model.masked_image": {"decoder_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2},
        },
    )
    result = CliRunner().invoke(
        app,
        ["predict", str(checkpoint), str(small_db.parent / "images" / "skimage"), "-o", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {checkpoint}: the checkpoint has no task heads to predict with (its tasks tiles are "
        "label-free pretraining only); use a checkpoint of a run with a labelled task"
    ]
    assert not (tmp_path / "o").exists()


def test_cli_predicts_and_reports_an_unknown_task_in_one_line(
    image_checkpoint: Path, small_db: Path, tmp_path: Path
) -> None:
    folder = small_db.parent / "images" / "skimage"
    args = ["predict", str(image_checkpoint), str(folder), "-o", str(tmp_path / "o"), "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--task", "organs"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "its tasks: nuclei_seg, nuclei_det, imaging_technique, looks" in result.output
    result = CliRunner().invoke(app, [*args, "--task", "imaging_technique"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "predictions.csv").is_file()
    metadata = json.loads((tmp_path / "o" / "prediction.json").read_text())
    assert metadata["task"] == "imaging_technique" and Preprocessing.model_validate(metadata["preprocessing"])


def test_boxes_of_zero_size_are_left_out_with_a_warning(
    small_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The released encoder's nuclei_det head never learnt to regress boxes (every side 0):
    its detections are not written as zero-size objects, and the run says why there are none."""
    tile = small_db.parent / "images" / "stardist" / "nuclei_y000_x064.png"
    with caplog.at_level("WARNING"):
        out = _predict(Path("medfoundry:resnet18-views"), tile, tmp_path / "det", task="nuclei_det")
    coco = json.loads((out / "detections.json").read_text())
    assert coco["images"] and all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in coco["annotations"])
    assert "of zero width or height were left out (0 kept)" in caplog.text

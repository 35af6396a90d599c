"""The bad-input corpus: every malformed input (data of every source type, configs, checkpoints,
run folders) ends the command with one line naming the file, row or key, exit code 2, and
nothing written anywhere: not in the case's folder, not in the cache (``XDG_CACHE_HOME``).
The valid twins of the same inputs pass.

Each case writes a valid input from tiny crops of real images (``corpus_inputs``), breaks one
thing, and runs the command in-process through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.output_folders import write_marker
from tests.cli.corpus_inputs import SIDE, Inputs, RealPixels, load_real_pixels

runner = CliRunner()
Case = Callable[[Inputs], tuple[list[str], str]]
CASES: list[Case] = []


def case(fn: Case) -> Case:
    CASES.append(fn)
    return fn


@pytest.fixture(scope="session")
def real() -> RealPixels:
    # matplotlib (the study report) writes its font list to XDG_CACHE_HOME on its first import on
    # a machine, whatever the input: let that happen here, not inside a case
    import matplotlib.font_manager  # noqa: F401

    return load_real_pixels()


@pytest.fixture(scope="session")
def trained_run(real: RealPixels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step run (resnet10t, 32 px) whose folder and checkpoints cases copy."""
    inputs = Inputs(tmp_path_factory.mktemp("trained"), real)
    result = runner.invoke(app, ["pretrain", str(inputs.pretrain_config(inputs.classification()))])
    assert result.exit_code == 0, result.output
    return inputs.folder / "run"


def validate(c: Inputs, *tasks: dict[str, Any]) -> list[str]:
    return ["validate-data", str(c.database(*tasks))]


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``roots`` with its size and modification time (folders: existence only,
    since creating and removing a temporary entry touches a folder without writing anything)."""
    files = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            stat = path.lstat()
            files[str(path)] = (0, 0) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return files


def _cache_root() -> Path:
    return Path(os.environ["XDG_CACHE_HOME"])


# --- manifests (classification, multilabel, segmentation, detection) ---
@case
def manifest_not_utf8(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    path = Path(task["source"]["path"])
    path.write_bytes(path.read_bytes().replace(b",b\n", b",b\xe9\n", 1))
    return validate(c, task), "cls.csv, row 3: not UTF-8 text"


@case
def manifest_missing_column(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    (c.folder / "cls.csv").write_text("image,diagnosis\ncls/0.png,a\n")
    return validate(c, task), "cls.csv: missing column(s) label (found: image, diagnosis)"


@case
def manifest_without_rows(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    (c.folder / "cls.csv").write_text("image,label\n")
    return validate(c, task), "cls.csv: the manifest has no rows"


@case
def manifest_undeclared_label(c: Inputs) -> tuple[list[str], str]:
    task = c.classification(classes=["a", "c"])
    return validate(c, task), "cls.csv, rows 3, 5, 7, 9: label 'b' is not a declared class (a, c)"


@case
def manifest_image_missing(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    (c.folder / "cls" / "3.png").unlink()
    return validate(c, task), "cls.csv, row 5: file not found"


@case
def manifest_image_twice(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    with (c.folder / "cls.csv").open("a") as f:
        f.write("cls/0.png,b\n")
    return validate(c, task), "cls.csv, row 10: image"


@case
def manifest_bad_split(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    (c.folder / "cls.csv").write_text("image,label,split\ncls/0.png,a,train\ncls/1.png,b,validation\n")
    return validate(c, task), "cls.csv, row 3: split 'validation' is not one of train, val, test"


@case
def image_truncated(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    c.png("cls/2.png", c.gray(2, 64))
    (c.folder / "cls" / "2.png").write_bytes((c.folder / "cls" / "2.png").read_bytes()[:120])
    return validate(c, task), "2.png: cannot decode image"


@case
def image_empty_file(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    (c.folder / "cls" / "2.png").write_bytes(b"")
    return validate(c, task), "2.png: file is empty (0 bytes)"


@case
def image_not_an_image(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    (c.folder / "cls" / "2.png").write_bytes(b"this is a text file\n" * 10)
    return validate(c, task), "2.png: cannot decode image"


@case
def image_decompression_bomb(c: Inputs) -> tuple[list[str], str]:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    task = c.classification()
    (c.folder / "cls" / "2.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    )
    return validate(c, task), "2.png: image too large to decode safely"


@case
def image_one_pixel(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    c.png("cls/2.png", c.gray(2, 1))
    return validate(c, task), "2.png: image is 1x1 pixels (width x height); at least 4x4 are needed"


@case
def image_float_nan(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    image = c.gray(2).astype(np.float32) / 255
    image[3, 4] = np.nan
    tifffile.imwrite(c.folder / "cls" / "2.tif", image)
    (c.folder / "cls.csv").write_text((c.folder / "cls.csv").read_text().replace("cls/2.png", "cls/2.tif"))
    return validate(c, task), "2.tif: image holds NaN or infinite values (nan at index (3, 4))"


@case
def image_beyond_float32(c: Inputs) -> tuple[list[str], str]:
    task = c.classification(preprocessing={"intensity": "minmax"})
    image = c.gray(2).astype(np.float64)
    image[5, 6] = 1e39
    tifffile.imwrite(c.folder / "cls" / "2.tif", image)
    (c.folder / "cls.csv").write_text((c.folder / "cls.csv").read_text().replace("cls/2.png", "cls/2.tif"))
    return validate(c, task), "2.tif: value 1e+39 at index (5, 6) lies beyond the float32 range"


@case
def classes_differing_in_case(c: Inputs) -> tuple[list[str], str]:
    task = c.classification(labels=("Benign", "benign", "malignant") * 3)
    del task["classes"]
    return validate(c, task), "cls.csv: class names that differ only in case: 'Benign' and 'benign'"


@case
def multilabel_bad_value(c: Inputs) -> tuple[list[str], str]:
    task = c.multilabel()
    (c.folder / "ml.csv").write_text("image,x,y\nml/0.png,1,0\nml/1.png,2,1\n")
    return validate(c, task), "ml.csv, row 3: column 'x' must be 1, 0 or empty (missing), got '2'"


@case
def mask_size_differs(c: Inputs) -> tuple[list[str], str]:
    task = c.segmentation()
    c.png("seg/2_mask.png", c.mask(2, 12))
    return validate(c, task), "2_mask.png: mask is 12x12 but image"


@case
def mask_value_outside_classes(c: Inputs) -> tuple[list[str], str]:
    task = c.segmentation()
    c.png("seg/2_mask.png", c.mask(2) * 7)
    return validate(c, task), "2_mask.png: mask value(s) [7] outside the 2 declared classes"


@case
def mask_not_integer(c: Inputs) -> tuple[list[str], str]:
    task = c.segmentation()
    tifffile.imwrite(c.folder / "seg" / "2_mask.tif", c.mask(2).astype(np.float32) * 0.5)
    (c.folder / "seg.csv").write_text((c.folder / "seg.csv").read_text().replace("2_mask.png", "2_mask.tif"))
    return validate(c, task), "2_mask.tif: mask holds non-integer values"


@case
def mask_value_not_mapped(c: Inputs) -> tuple[list[str], str]:
    task = c.segmentation()
    task["source"]["mask_values"] = {0: "background", 255: "nucleus"}
    return validate(c, task), "2_mask.png: mask value(s) [1] are not in mask_values (0, 255)"


@case
def boxes_not_json(c: Inputs) -> tuple[list[str], str]:
    task = c.detection()
    (c.folder / "det.csv").write_text('image,boxes\ndet/0.png,"[[2, 2, 9"\n')
    return validate(c, task), "det.csv, row 2: boxes are not valid JSON"


@case
def box_inverted(c: Inputs) -> tuple[list[str], str]:
    task = c.detection()
    (c.folder / "det.csv").write_text('image,boxes\ndet/0.png,"[[9, 2, 2, 10, ""nucleus""]]"\n')
    return validate(c, task), "det.csv, row 2: box 0 [9.0, 2.0, 2.0, 10.0] needs x2 > x1 and y2 > y1"


@case
def box_outside_image(c: Inputs) -> tuple[list[str], str]:
    task = c.detection()
    (c.folder / "det.csv").write_text('image,boxes\ndet/0.png,"[[2, 2, 40, 10, ""nucleus""]]"\n')
    return validate(c, task), "row 2: box 0 [2.0, 2.0, 40.0, 10.0] lies outside the image (16x16)"


@case
def box_undeclared_class(c: Inputs) -> tuple[list[str], str]:
    task = c.detection()
    (c.folder / "det.csv").write_text('image,boxes\ndet/0.png,"[[2, 2, 9, 10, ""cell""]]"\n')
    return validate(c, task), "det.csv, row 2: box 0: class 'cell' is not a declared class (nucleus)"


# --- image folders ---
@case
def image_folder_missing(c: Inputs) -> tuple[list[str], str]:
    task = c.image_folder()
    shutil.rmtree(c.folder / "folders")
    return validate(c, task), "folders: folder not found"


@case
def image_folder_undeclared_subfolder(c: Inputs) -> tuple[list[str], str]:
    task = c.image_folder()
    c.png("folders/c/9.png", c.gray(9))
    return validate(c, task), "folders/c: subfolder 'c' is not a declared class (a, b)"


@case
def image_folder_without_images(c: Inputs) -> tuple[list[str], str]:
    task = c.image_folder()
    for png in (c.folder / "folders").rglob("*.png"):
        png.rename(png.with_suffix(".txt"))
    return validate(c, task), "folders: no images in class subfolders"


@case
def image_folder_split_folders_missing(c: Inputs) -> tuple[list[str], str]:
    task = c.image_folder()
    task["source"]["split_folders"] = True
    return validate(c, task), "split_folders is set but there is no train/val/test subfolder"


@case
def image_folder_truncated_jpeg(c: Inputs) -> tuple[list[str], str]:
    task = c.image_folder()
    c.png("folders/a/big.jpg", c.colour(0, 64))
    (c.folder / "folders/a/big.jpg").write_bytes((c.folder / "folders/a/big.jpg").read_bytes()[:200])
    return validate(c, task), "big.jpg: cannot decode image"


# --- segmentation folders ---
@case
def pair_without_mask(c: Inputs) -> tuple[list[str], str]:
    task = c.segmentation_folders()
    (c.folder / "pairs/masks/3_mask.png").unlink()
    return validate(c, task), "3.png: no mask named 3_mask.* in"


@case
def mask_without_image(c: Inputs) -> tuple[list[str], str]:
    task = c.segmentation_folders()
    c.png("pairs/masks/9_mask.png", c.mask(9))
    return validate(c, task), "9_mask.png: mask without a matching image in"


@case
def pairs_in_one_folder_without_suffix(c: Inputs) -> tuple[list[str], str]:
    task = c.segmentation_folders()
    task["source"].update(masks="pairs/images", mask_suffix="")
    return validate(c, task), "images and annotations are in one folder; set the annotation suffix"


@case
def boxes_from_non_instance_masks(c: Inputs) -> tuple[list[str], str]:
    task = c.segmentation_folders()
    task.update(type="detection", classes=["nucleus"])
    return validate(c, task), "boxes come from instance masks: set mask_values: instances"


# --- COCO ---
@case
def coco_not_json(c: Inputs) -> tuple[list[str], str]:
    task = c.coco()
    (c.folder / "coco/coco.json").write_text("{images: [")
    return validate(c, task), "coco.json: not valid JSON"


@case
def coco_missing_lists(c: Inputs) -> tuple[list[str], str]:
    task = c.coco()
    (c.folder / "coco/coco.json").write_text(json.dumps({"images": []}))
    return validate(c, task), "coco.json: a COCO file needs the lists annotations, categories"


@case
def coco_unknown_category(c: Inputs) -> tuple[list[str], str]:
    task = c.coco([{"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4]}])
    return validate(c, task), "coco.json: annotation 5: category_id 3 is not in 'categories'"


@case
def coco_bad_bbox(c: Inputs) -> tuple[list[str], str]:
    task = c.coco([{"id": 5, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4]}])
    return validate(c, task), "coco.json: annotation 5: bbox must be [x, y, width, height], got [1, 1, 4]"


@case
def coco_bbox_outside(c: Inputs) -> tuple[list[str], str]:
    task = c.coco([{"id": 5, "image_id": 1, "category_id": 7, "bbox": [10, 10, 30, 4]}])
    return validate(c, task), "coco.json: annotation 5: bbox [10, 10, 30, 4] lies outside image 0.png"


@case
def coco_annotation_not_object(c: Inputs) -> tuple[list[str], str]:
    task = c.coco([17])
    return validate(c, task), "coco.json: an annotation is not a JSON object: 17"


@case
def coco_image_missing(c: Inputs) -> tuple[list[str], str]:
    task = c.coco()
    (c.folder / "coco/4.png").unlink()
    return validate(c, task), "coco.json: image 5: file not found"


# --- MedMNIST ---
@case
def medmnist_missing(c: Inputs) -> tuple[list[str], str]:
    task = c.medmnist()
    (c.folder / "mnist.npz").unlink()
    return validate(c, task), "mnist.npz: MedMNIST file not found"


@case
def medmnist_not_an_archive(c: Inputs) -> tuple[list[str], str]:
    task = c.medmnist()
    (c.folder / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return validate(c, task), "mnist.npz: not a readable .npz archive"


@case
def medmnist_3d(c: Inputs) -> tuple[list[str], str]:
    task = c.medmnist(train_images=np.zeros((8, 4, 28, 28), np.uint8))
    return validate(c, task), "train_images has shape (8, 4, 28, 28); expected (N, H, W) or (N, H, W, 3)"


@case
def medmnist_label_beyond_classes(c: Inputs) -> tuple[list[str], str]:
    task = c.medmnist(train_labels=(np.arange(8) % 3)[:, None])
    return validate(c, task), "train_labels holds values 0..2, but 2 classes are declared"


@case
def medmnist_rows_mismatch(c: Inputs) -> tuple[list[str], str]:
    task = c.medmnist(train_labels=np.zeros((5, 1), np.int64))
    return validate(c, task), "mnist.npz: train_labels has 5 rows for 8 images"


# --- DICOM ---
@case
def dicom_header_truncated(c: Inputs) -> tuple[list[str], str]:
    task = c.dicom()
    (c.folder / "dicom/ct1.dcm").write_bytes(c.real.ct.read_bytes()[:600])
    return validate(c, task), "ct1.dcm: a CT Image Storage object whose header ends before the image size"


@case
def dicom_pixels_truncated(c: Inputs) -> tuple[list[str], str]:
    task = c.dicom()
    (c.folder / "dicom/ct1.dcm").write_bytes(c.real.ct.read_bytes()[:-4000])
    return validate(c, task), "ct1.dcm: cannot decode DICOM pixels"


@case
def dicom_without_label_tag(c: Inputs) -> tuple[list[str], str]:
    task = c.dicom()
    del task["source"]["label_tag"]
    return validate(c, task), "a classification task from DICOM needs label_tag"


@case
def dicom_undeclared_modality(c: Inputs) -> tuple[list[str], str]:
    task = c.dicom()
    task["classes"] = ["CT", "CR"]
    return validate(c, task), "Modality 'MR' is not a declared class (CT, CR)"


@case
def dicom_folder_without_dicom(c: Inputs) -> tuple[list[str], str]:
    task = c.dicom()
    for f in (c.folder / "dicom").iterdir():
        f.unlink()
    return validate(c, task), "dicom: no DICOM images found"


# --- volumes ---
@case
def volume_truncated(c: Inputs) -> tuple[list[str], str]:
    task = c.volume()
    image = c.folder / "vol/case_image.nii.gz"
    image.write_bytes(image.read_bytes()[:-300])
    return validate(c, task), "case_image.nii.gz: cannot read volume"


@case
def volume_4d_without_index(c: Inputs) -> tuple[list[str], str]:
    task = c.volume()
    data = np.stack([c.real.volume[:, :, :6]] * 3, axis=-1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), c.folder / "vol/case_image.nii.gz")
    return validate(c, task), "the file is 4D (shape (33, 41, 6, 3)); set source.volume_index"


@case
def volume_label_shape_differs(c: Inputs) -> tuple[list[str], str]:
    task = c.volume()
    nib.save(nib.Nifti1Image(np.zeros((33, 41, 5), np.uint8), np.eye(4)), c.folder / "vol/case_label.nii.gz")
    return validate(c, task), "case_label.nii.gz: label volume shape (33, 41, 5) differs from image"


@case
def volume_label_not_integer(c: Inputs) -> tuple[list[str], str]:
    task = c.volume()
    labels = np.full((33, 41, 6), 0.5, np.float32)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), c.folder / "vol/case_label.nii.gz")
    return validate(c, task), "case_label.nii.gz: label volume holds non-integer values"


@case
def volume_without_labels(c: Inputs) -> tuple[list[str], str]:
    task = c.volume(label_name="other_label.nii.gz")
    return validate(c, task), "case_image.nii.gz: no label volume named case_label.* in"


@case
def volume_with_nan(c: Inputs) -> tuple[list[str], str]:
    task = c.volume()
    data = c.real.volume[:, :, :6].astype(np.float32)
    data[4, 5, 2] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), c.folder / "vol/case_image.nii.gz")
    return validate(c, task), "case_image.nii.gz: image holds NaN or infinite values (nan at index (4, 5, 2))"


@case
def volume_label_value_outside_classes(c: Inputs) -> tuple[list[str], str]:
    task = c.volume()
    labels = np.zeros((33, 41, 6), np.uint8)
    labels[10:20, 10:20, 1:5] = 9
    nib.save(nib.Nifti1Image(labels, np.eye(4)), c.folder / "vol/case_label.nii.gz")
    return validate(c, task), "case_label.nii.gz [1-4]: mask value(s) [9] outside the 2 declared classes"


# --- configs ---
@case
def config_unknown_key(c: Inputs) -> tuple[list[str], str]:
    path = c.pretrain_config(c.classification(), **{"training.lrr": 1})
    return ["pretrain", str(path)], "pretrain.yaml: training.lrr: unknown key (valid: strategy, epochs"


@case
def config_invalid_yaml(c: Inputs) -> tuple[list[str], str]:
    path = c.folder / "pretrain.yaml"
    path.write_text("run_dir: run\ntraining: {epochs: [1\n")
    return ["pretrain", str(path)], "pretrain.yaml: invalid YAML at line 3"


@case
def config_not_utf8(c: Inputs) -> tuple[list[str], str]:
    path = c.pretrain_config(c.classification())
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    return ["pretrain", str(path)], "pretrain.yaml: not UTF-8 text"


@case
def config_bad_override(c: Inputs) -> tuple[list[str], str]:
    path = c.pretrain_config(c.classification())
    return ["pretrain", str(path), "--set", "training.epochs"], "--set 'training.epochs': expected key=value"


@case
def config_wrong_type(c: Inputs) -> tuple[list[str], str]:
    path = c.pretrain_config(c.classification(), **{"data.batch_size": "many"})
    return ["pretrain", str(path)], "data.batch_size: Input should be a valid integer"


@case
def config_unknown_encoder(c: Inputs) -> tuple[list[str], str]:
    path = c.pretrain_config(c.classification(), **{"model.encoder.name": "resnet181"})
    return ["pretrain", str(path)], "unknown timm model 'resnet181'; did you mean 'resnet18'"


@case
def config_smuggled_timm_argument(c: Inputs) -> tuple[list[str], str]:
    kwargs = {"checkpoint_path": str(c.folder / "evil.pth")}
    path = c.pretrain_config(c.classification(), **{"model.encoder.model_kwargs": kwargs})
    return ["pretrain", str(path)], "model.encoder.model_kwargs: Value error, 'checkpoint_path' is not"


@case
def config_patch_size_does_not_divide(c: Inputs) -> tuple[list[str], str]:
    encoder = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 1}}
    path = c.pretrain_config(c.classification(), **{"model.encoder": encoder, "model.image_size": 40})
    return ["pretrain", str(path)], "image_size 40 is not a multiple of the 16-pixel patches"


@case
def config_duplicate_task_names(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    return ["pretrain", str(c.pretrain_config(task, task))], "task names must be unique; repeated: cls"


@case
def config_tasks_file_missing(c: Inputs) -> tuple[list[str], str]:
    path = c.folder / "pretrain.yaml"
    config = {"run_dir": "run", "model": {"encoder": {"name": "resnet10t"}}, "tasks": "no.yaml"}
    path.write_text(yaml.safe_dump(config))
    return ["pretrain", str(path)], "no.yaml: config file not found"


@case
def config_validate_unknown_task_type(c: Inputs) -> tuple[list[str], str]:
    task = c.classification(type="classifcation")
    return validate(c, task), "unknown task type 'classifcation'; did you mean 'classification'"


# --- run folders ---
@case
def run_dir_parent_is_a_file(c: Inputs) -> tuple[list[str], str]:
    (c.folder / "file").write_text("x")
    path = c.pretrain_config(c.classification(), run_dir=str(c.folder / "file" / "run"))
    return ["pretrain", str(path)], "file/run: cannot be created, "


@case
def run_dir_cannot_be_created(c: Inputs) -> tuple[list[str], str]:
    if os.geteuid() == 0:  # root writes anywhere permissions allow nothing: use a pseudo file system
        run_dir = Path("/proc/medfoundry-corpus/run")
    else:
        (c.folder / "locked").mkdir(mode=0o555)
        run_dir = c.folder / "locked" / "run"
    path = c.pretrain_config(c.classification(), run_dir=str(run_dir))
    return ["pretrain", str(path)], f"run_dir {run_dir}: cannot be created"


@case
def run_dir_holds_other_files(c: Inputs) -> tuple[list[str], str]:
    (c.folder / "run").mkdir()
    (c.folder / "run" / "notes.txt").write_text("mine")
    path = c.pretrain_config(c.classification())
    return ["pretrain", str(path)], "already exists and is not empty; use --resume"


def _copy_run(c: Inputs, trained_run: Path) -> Path:
    run = c.folder / "run"
    shutil.copytree(trained_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    c.classification()  # the same data files, in this case's folder
    config["tasks"][0]["source"]["path"] = str(c.folder / "cls.csv")
    config["run_dir"] = str(run)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


@case
def run_dir_holds_another_run(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    _copy_run(c, trained_run)
    path = c.pretrain_config(c.classification(), seed=3)
    return ["pretrain", str(path)], "already holds a run with another config (differs at seed)"


@case
def resume_with_another_config(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    run = _copy_run(c, trained_run)
    argv = ["pretrain", "--resume", str(run), "--set", "training.optimizer.lr=0.5"]
    return argv, "the config differs from the one the run was started with at training.optimizer.lr"


@case
def resume_without_config(c: Inputs) -> tuple[list[str], str]:
    (c.folder / "run").mkdir()
    return ["pretrain", "--resume", str(c.folder / "run")], "run: not a run folder (no config.yaml)"


@case
def resume_through_a_planted_link(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    run = _copy_run(c, trained_run)
    (c.folder / "victim.txt").write_text("precious")
    (run / "metrics.jsonl.tmp").symlink_to(c.folder / "victim.txt")
    return ["pretrain", "--resume", str(run)], "metrics.jsonl.tmp: a symbolic link inside the run folder"


@case
def resume_truncated_weights(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    run = _copy_run(c, trained_run)
    weights = run / "checkpoints/last/model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return ["pretrain", "--resume", str(run)], "last/model.safetensors: damaged or truncated safetensors file"


@case
def resume_truncated_trainer_state(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    run = _copy_run(c, trained_run)
    state = run / "checkpoints/last/trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    return ["pretrain", "--resume", str(run)], "trainer_state.safetensors: damaged or truncated safetensors"


@case
def resume_trainer_state_not_json(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    run = _copy_run(c, trained_run)
    (run / "checkpoints/last/trainer_state.json").write_text('{"step": ')
    return ["pretrain", "--resume", str(run)], "trainer_state.json: not valid JSON"


# --- checkpoints (export, embed, evaluate) ---
def _copy_checkpoint(c: Inputs, trained_run: Path) -> Path:
    checkpoint = c.folder / "ckpt"
    shutil.copytree(trained_run / "checkpoints" / "best", checkpoint)
    return checkpoint


def _edit_config(checkpoint: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    edit(config)
    (checkpoint / "config.json").write_text(json.dumps(config))


def _export(c: Inputs, checkpoint: Path) -> list[str]:
    return ["export", str(checkpoint), "--timm", str(c.folder / "exported")]


@case
def export_truncated_weights(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    return _export(c, checkpoint), "ckpt/model.safetensors: damaged or truncated safetensors file"


@case
def export_config_without_model(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    _edit_config(checkpoint, lambda config: config.pop("model"))
    return _export(c, checkpoint), "ckpt/config.json: model: required key is missing"


@case
def export_config_wrong_type(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    _edit_config(checkpoint, lambda config: config["model"].update(image_size="large"))
    return _export(c, checkpoint), "ckpt/config.json: model.image_size: Input should be a valid integer"


@case
def export_other_architecture(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    _edit_config(checkpoint, lambda config: config["model"]["encoder"].update(name="resnet14t"))
    return _export(c, checkpoint), "ckpt/model.safetensors: weights do not fit the model described by its"


@case
def export_smuggled_timm_argument(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    kwargs = {"checkpoint_path": str(c.folder / "evil.pth")}
    _edit_config(checkpoint, lambda config: config["model"]["encoder"].update(model_kwargs=kwargs))
    return _export(c, checkpoint), "config.json: model.encoder.model_kwargs: Value error, 'checkpoint_path'"


@case
def export_config_not_utf8(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    (checkpoint / "config.json").write_bytes(b'{"format": "\xff"}')
    return _export(c, checkpoint), "ckpt/config.json: not UTF-8 text"


@case
def export_not_a_checkpoint(c: Inputs) -> tuple[list[str], str]:
    (c.folder / "ckpt").mkdir()
    return _export(c, c.folder / "ckpt"), "ckpt: not a medfoundry checkpoint (expected a folder with"


@case
def embed_truncated_weights(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    c.classification()
    argv = ["embed", str(checkpoint), str(c.folder / "cls.csv"), "-o", str(c.folder / "features.npz")]
    return argv, "ckpt/model.safetensors: damaged or truncated safetensors file"


@case
def evaluate_truncated_weights(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    study = {
        "study_dir": str(c.folder / "study"),
        "tasks": [c.classification()],
        "encoders": [{"name": "ours", "source": str(checkpoint)}],
        "modes": ["linear"],
        "fractions": [1.0],
        "seeds": 1,
    }
    (c.folder / "study.yaml").write_text(yaml.safe_dump(study))
    return ["evaluate", str(c.folder / "study.yaml")], "ckpt/model.safetensors: damaged or truncated"


@case
def evaluate_study_folder_with_a_planted_link(c: Inputs) -> tuple[list[str], str]:
    (c.folder / "study").mkdir()
    write_marker(c.folder / "study", "evaluate")  # a study folder of its own, but for the link
    (c.folder / "victim.txt").write_text("precious")
    (c.folder / "study" / "results.csv").symlink_to(c.folder / "victim.txt")
    study = {
        "study_dir": str(c.folder / "study"),
        "tasks": [c.classification()],
        "encoders": [{"name": "random", "source": "resnet10t", "pretrained": False}],
        "image_size": 32,
        "modes": ["linear"],
        "fractions": [1.0],
        "seeds": 1,
    }
    (c.folder / "study.yaml").write_text(yaml.safe_dump(study))
    return ["evaluate", str(c.folder / "study.yaml")], "results.csv: a symbolic link inside the study folder"


@case
def manifest_short_row_with_inferred_classes(c: Inputs) -> tuple[list[str], str]:
    task = c.classification()
    del task["classes"]  # inferred from the label column
    c.png("cls/8.png", c.gray(8))
    with (c.folder / "cls.csv").open("a") as f:
        f.write("cls/8.png\n")  # a row without its label cell
    return validate(c, task), "cls.csv, row 10: the label is empty (every row needs one of a, b)"


@case
def config_class_names_that_yaml_reads_as_numbers(c: Inputs) -> tuple[list[str], str]:
    task = c.classification(labels=("0", "1") * 4)
    (c.folder / "tasks.yaml").write_text(
        yaml.safe_dump({"tasks": [task]}).replace("- '0'\n", "- 0\n").replace("- '1'\n", "- 1\n")
    )
    return [
        "validate-data",
        str(c.folder / "tasks.yaml"),
    ], "class names must be text, got 0, 1: put them in quotes"


@case
def embed_cache_dir_is_a_file(c: Inputs, trained_run: Path) -> tuple[list[str], str]:
    checkpoint = _copy_checkpoint(c, trained_run)
    c.classification()
    argv = ["embed", str(checkpoint), str(c.folder / "cls.csv"), "-o", str(c.folder / "features.npz")]
    return [
        *argv,
        "--cache-dir",
        str(c.folder / "cls" / "0.png"),
    ], "0.png: --cache-dir is a file, not a folder"


def _needs_run(fn: Case) -> bool:
    return "trained_run" in fn.__code__.co_varnames[: fn.__code__.co_argcount]


def test_the_corpus_covers_every_input_kind() -> None:
    assert len(CASES) >= 60
    names = " ".join(fn.__name__ for fn in CASES)
    for kind in ("manifest", "image_folder", "pair", "coco", "medmnist", "dicom", "volume", "config"):
        assert kind in names, kind
    assert "run_dir" in names and "resume" in names and "export" in names


@pytest.mark.parametrize("build", CASES, ids=[fn.__name__ for fn in CASES])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(
    build: Case, real: RealPixels, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    inputs = Inputs(tmp_path, real)
    args = (inputs, request.getfixturevalue("trained_run")) if _needs_run(build) else (inputs,)
    argv, expected = build(*args)  # type: ignore[call-arg]
    before = _snapshot(tmp_path, _cache_root())
    result = runner.invoke(app, argv)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0], lines[0]
    after = _snapshot(tmp_path, _cache_root())
    changed = sorted(set(after.items()) ^ set(before.items()))
    assert not changed, f"the failed command wrote or changed files: {changed[:4]}"


# --- the valid twins ---
def test_every_source_type_passes_validation(real: RealPixels, tmp_path: Path) -> None:
    inputs = Inputs(tmp_path, real)
    result = runner.invoke(app, validate(inputs, *inputs.all_sources()))
    assert result.exit_code == 0, result.output
    assert "ok: 10 task(s), every sample decoded" in result.output


def test_refused_valid_data_is_accepted(real: RealPixels, tmp_path: Path) -> None:
    """Palette masks, explicit image/label files and *_image/*_label pairs in one folder."""
    inputs = Inputs(tmp_path, real)
    palette = inputs.segmentation()
    for i in range(6):  # indexed PNGs, as many segmentation datasets ship them
        mask = Image.fromarray(inputs.mask(i), mode="P")
        mask.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        mask.save(tmp_path / "seg" / f"{i}_mask.png")
    pairs = inputs.volume()
    explicit = {**pairs, "name": "explicit"}
    explicit["source"] = {
        "type": "volume",
        "images": str(tmp_path / "vol" / "case_image.nii.gz"),
        "labels": str(tmp_path / "vol" / "case_label.nii.gz"),
    }
    result = runner.invoke(app, validate(inputs, palette, pairs, explicit))
    assert result.exit_code == 0, result.output
    assert result.output.count("nucleus") >= 1 and "ok: 3 task(s)" in result.output


def test_validate_data_reports_what_it_changed_and_warns(real: RealPixels, tmp_path: Path) -> None:
    inputs = Inputs(tmp_path, real)
    task = inputs.classification(labels=("Benign", "benign", "malignant") * 3)
    rgba = np.dstack([inputs.colour(0), np.full((SIDE, SIDE), 255, np.uint8)])
    inputs.png("cls/0.png", rgba)
    dicom = inputs.dicom()
    (tmp_path / "dicom" / "notes.txt").write_text("scanner log")
    outlier = inputs.detection()  # one finite but extreme pixel makes a minmax-scaled image blank
    outlier["preprocessing"] = {"intensity": "minmax"}
    image = inputs.gray(0).astype(np.float32)
    image[0, 0] = 1e30
    tifffile.imwrite(tmp_path / "det" / "0.tif", image)
    (tmp_path / "det.csv").write_text((tmp_path / "det.csv").read_text().replace("det/0.png", "det/0.tif"))
    result = runner.invoke(app, validate(inputs, task, dicom, outlier))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "classes 'Benign' and 'benign' differ only in case" in text
    assert "class 'Benign' has 3 samples (fewer than 5)" in text  # the table's word for what is counted
    assert "0.png: alpha channel dropped" in text
    assert "notes.txt: not a DICOM file; passed over" in text
    assert "enlarged more than 4x to the cached 224 px" in text
    assert "0.tif: stored nearly blank (99.6% of pixels at 0 of 255) although its values vary" in text


def test_a_resume_through_a_planted_link_leaves_its_target_alone(
    real: RealPixels, trained_run: Path, tmp_path: Path
) -> None:
    inputs = Inputs(tmp_path, real)
    run = _copy_run(inputs, trained_run)
    (tmp_path / "victim.txt").write_text("precious")
    (run / "metrics.jsonl.tmp").symlink_to(tmp_path / "victim.txt")
    assert runner.invoke(app, ["pretrain", "--resume", str(run)]).exit_code == 2
    (run / "metrics.jsonl.tmp").unlink()
    result = runner.invoke(app, ["pretrain", "--resume", str(run)])  # without the link it resumes
    assert result.exit_code == 0, result.output
    assert (tmp_path / "victim.txt").read_text() == "precious"

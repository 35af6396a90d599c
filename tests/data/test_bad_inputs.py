"""The bad-input corpus: each broken input gives one clear line naming the file, row or key; with
``on_error: skip`` the bad samples are counted and left out instead, and nothing bad is cached."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import tifffile
import yaml
from rich.console import Console

from medfoundry.errors import MedfoundryError
from medfoundry.recipes import validate_data
from tests.data.conftest import gray, write_png

Case = Callable[[Path], tuple[dict[str, Any], str]]


def _manifest(folder: Path, text: str, **task: Any) -> dict[str, Any]:
    write_png(folder / "good.png", gray(16, 100))
    (folder / "m.csv").write_text(text)
    return {"name": "t", "type": "classification", "classes": ["a", "b"], "source": {"path": "m.csv"}, **task}


def truncated_png(folder: Path) -> tuple[dict[str, Any], str]:
    write_png(folder / "full.png", (np.arange(256 * 64) % 251).astype(np.uint8).reshape(128, 128))
    (folder / "bad.png").write_bytes((folder / "full.png").read_bytes()[:300])
    return _manifest(folder, "image,label\ngood.png,a\nbad.png,b\n"), "bad.png: cannot decode image"


def truncated_dicom(folder: Path) -> tuple[dict[str, Any], str]:
    from pydicom.data import get_testdata_file

    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    (folder / "dicom").mkdir()
    shutil.copy(str(get_testdata_file("MR_small.dcm")), folder / "dicom" / "good.dcm")
    (folder / "dicom" / "bad.dcm").write_bytes(data[:-4000])
    task = {
        "name": "t",
        "type": "classification",
        "classes": ["CT", "MR"],
        "source": {"type": "dicom", "path": "dicom", "label_tag": "Modality"},
    }
    return task, "bad.dcm: cannot decode DICOM pixels"


def zero_byte_file(folder: Path) -> tuple[dict[str, Any], str]:
    (folder / "bad.png").write_bytes(b"")
    return _manifest(folder, "image,label\ngood.png,a\nbad.png,b\n"), "bad.png: file is empty (0 bytes)"


def nifti_shape_mismatch(folder: Path) -> tuple[dict[str, Any], str]:
    for sub in ("images", "labels"):
        (folder / sub).mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), folder / "images" / "good.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), folder / "labels" / "good.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), folder / "images" / "bad.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.uint8), np.eye(4)), folder / "labels" / "bad.nii.gz")
    task = {
        "name": "t",
        "type": "segmentation",
        "classes": ["background", "organ"],
        "source": {"type": "volume", "images": "images", "labels": "labels"},
    }
    return task, "bad.nii.gz: label volume shape (8, 8, 3) differs from image"


def mask_values_outside_classes(folder: Path) -> tuple[dict[str, Any], str]:
    write_png(folder / "good_mask.png", gray(16, 1))
    write_png(folder / "bad_mask.png", gray(16, 7))
    task = _manifest(
        folder,
        "image,mask\ngood.png,good_mask.png\ngood2.png,bad_mask.png\n",
        type="segmentation",
        classes=["background", "cell"],
    )
    write_png(folder / "good2.png", gray(16))
    return task, "bad_mask.png: mask value(s) [7] outside the 2 declared classes"


def binary_mask_saved_as_0_255(folder: Path) -> tuple[dict[str, Any], str]:
    lesion = gray(16)
    lesion[4:9, 5:11] = 255  # a binary mask as most tools save it: 255 is the lesion, not "unlabelled"
    write_png(folder / "lesion_mask.png", lesion)
    write_png(folder / "empty_mask.png", gray(16))
    task = _manifest(
        folder,
        "image,mask\ngood.png,empty_mask.png\ngood2.png,lesion_mask.png\n",
        type="segmentation",
        classes=["background", "lesion"],
    )
    write_png(folder / "good2.png", gray(16))
    return task, (
        "lesion_mask.png: mask holds only the values 0 and 255, and without mask_values 255 is the "
        "ignore index, so every foreground pixel would be dropped; write "
        "mask_values: {0: background, 255: lesion}"
    )


def _detection(folder: Path, bad_box: str) -> dict[str, Any]:
    write_png(folder / "other.png", gray(16))
    text = f'image,boxes\ngood.png,"[[1, 1, 4, 4, ""a""]]"\nother.png,"[{bad_box}]"\n'
    return _manifest(folder, text, type="detection", classes=["a"])


def box_outside_image(folder: Path) -> tuple[dict[str, Any], str]:
    return _detection(
        folder, '[10, 10, 30, 12, ""a""]'
    ), "other.png, row 3: box 0 [10.0, 10.0, 30.0, 12.0] lies outside the image (16x16)"


def box_x2_below_x1(folder: Path) -> tuple[dict[str, Any], str]:
    return _detection(
        folder, '[8, 1, 4, 4, ""a""]'
    ), "m.csv, row 3: box 0 [8.0, 1.0, 4.0, 4.0] needs x2 > x1 and y2 > y1"


def undeclared_coco_category(folder: Path) -> tuple[dict[str, Any], str]:
    write_png(folder / "good.png", gray(16))
    coco = {
        "images": [{"id": 1, "file_name": "good.png", "width": 16, "height": 16}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3]},
            {"id": 2, "image_id": 1, "category_id": 4, "bbox": [1, 1, 3, 3]},
        ],
    }
    (folder / "coco.json").write_text(json.dumps(coco))
    task = {
        "name": "t",
        "type": "detection",
        "classes": ["cell"],
        "source": {"type": "coco", "path": "coco.json"},
    }
    return task, "coco.json: annotation 2: category_id 4 is not in 'categories'"


def csv_missing_a_column(folder: Path) -> tuple[dict[str, Any], str]:
    return _manifest(
        folder, "image,diagnosis\ngood.png,a\n"
    ), "m.csv: missing column(s) label (found: image, diagnosis)"


def duplicate_image_paths(folder: Path) -> tuple[dict[str, Any], str]:
    return _manifest(folder, "image,label\ngood.png,a\ngood.png,b\n"), "is listed twice (first at row 2)"


def unknown_config_key(folder: Path) -> tuple[dict[str, Any], str]:
    task = _manifest(folder, "image,label\ngood.png,a\n")
    task["source"]["label_col"] = "label"
    return task, "tasks.yaml: tasks.0.source.label_col: unknown key (valid: type, path, root, image_column"


def nan_in_float_image(folder: Path) -> tuple[dict[str, Any], str]:
    image = np.full((16, 16), 0.5, np.float32)
    image[3, 3] = np.nan
    tifffile.imwrite(folder / "bad.tif", image)
    return _manifest(
        folder, "image,label\ngood.png,a\nbad.tif,b\n"
    ), "bad.tif: image holds NaN or infinite values"


CASES: list[Case] = [
    truncated_png,
    truncated_dicom,
    zero_byte_file,
    nifti_shape_mismatch,
    mask_values_outside_classes,
    binary_mask_saved_as_0_255,
    box_outside_image,
    box_x2_below_x1,
    undeclared_coco_category,
    csv_missing_a_column,
    duplicate_image_paths,
    unknown_config_key,
    nan_in_float_image,
]
WHOLE_SOURCE = {csv_missing_a_column, unknown_config_key}  # nothing to skip to: always an error


def _database(folder: Path, tasks: list[dict[str, Any]], on_error: str = "raise") -> Path:
    path = folder / "tasks.yaml"
    data = {"on_error": on_error, "cache_dir": str(folder / "cache"), "val_fraction": 0.0}
    path.write_text(yaml.safe_dump({"tasks": tasks, "data": data}))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_each_bad_input_gives_one_clear_line(case: Case, tmp_path: Path) -> None:
    task, message = case(tmp_path)
    with pytest.raises(MedfoundryError) as info:
        validate_data.run(
            validate_data.load_validate_config(_database(tmp_path, [task])), Console(quiet=True)
        )
    assert len(info.value.problems) == 1, info.value.problems
    assert message in info.value.problems[0], info.value.problems[0]
    named = info.value.problems[0].startswith("task 't': ")
    assert named or case is unknown_config_key, info.value.problems[0]  # a config key names the file
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_skip_counts_bad_samples_and_summarises_them(tmp_path: Path) -> None:
    tasks = []
    for i, case in enumerate(c for c in CASES if c not in WHOLE_SOURCE):
        folder = tmp_path / case.__name__
        folder.mkdir()
        task, _ = case(folder)
        task["name"] = f"t{i}"
        source = task["source"]
        for key in ("path", "images", "labels"):
            if key in source:
                source[key] = str(folder / source[key])
        tasks.append(task)
    console = Console(record=True, width=200)
    summaries = validate_data.run(
        validate_data.load_validate_config(_database(tmp_path, tasks, "skip")), console
    )
    assert [len(s.skipped) for s in summaries] == [1] * len(tasks)
    assert all(sum(s.split_sizes.values()) >= 1 for s in summaries)
    text = console.export_text()
    assert text.count("1 problem(s), samples left out") == len(tasks) and "ok: 11 task(s)" in text

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfoundry.data import ManifestSource, decode_record, read_manifest
from medfoundry.errors import DataError


def _image(path: Path, size: int = 8) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size, size), np.uint8)).save(path)
    return path.name


def _write(path: Path, text: str) -> ManifestSource:
    path.write_text(text)
    return ManifestSource(path=path)


def test_classification_rows_become_class_indices(tmp_path: Path) -> None:
    _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    src = _write(tmp_path / "m.csv", "image,label,split\na.png,cat,train\nb.png,dog,val\n")
    records = read_manifest(src, "label", ["dog", "cat"])
    assert [(r.image.name, r.label, r.split) for r in records] == [("a.png", 1, "train"), ("b.png", 0, "val")]


def test_tsv_and_multilabel_missing_values(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    src = _write(tmp_path / "m.tsv", "image\tx\ty\tz\na.png\t1\t\t-1\n")
    (record,) = read_manifest(src, "multilabel", ["x", "y", "z"])
    assert record.labels is not None
    assert record.labels[0] == 1.0 and math.isnan(record.labels[1]) and math.isnan(record.labels[2])


def test_boxes_are_parsed_and_class_names_mapped(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    boxes = json.dumps([[1, 2, 5, 6, "b"], [0, 0, 3, 3, "a"]]).replace('"', '""')
    src = _write(tmp_path / "m.csv", f'image,boxes\na.png,"{boxes}"\n')
    (record,) = read_manifest(src, "boxes", ["a", "b"])
    assert record.boxes is not None
    assert [tuple(b) for b in record.boxes] == [(1, 2, 5, 6, 1), (0, 0, 3, 3, 0)]


def test_every_bad_row_is_reported_with_file_and_row(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    src = _write(tmp_path / "m.csv", "image,label\na.png,cat\nmissing.png,cat\na.png,cat\nb.png,horse\n")
    with pytest.raises(DataError) as info:
        read_manifest(src, "label", ["cat", "dog"])
    problems = info.value.problems
    assert any("row 3" in p and "file not found" in p for p in problems)
    assert any("row 4" in p and "listed twice" in p for p in problems)
    assert any("row 5" in p for p in problems)  # b.png is missing too
    assert all(str(src.path) in p for p in problems)


def test_label_outside_declared_classes(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    src = _write(tmp_path / "m.csv", "image,label\na.png,horse\n")
    with pytest.raises(DataError, match=r"row 2: label 'horse' is not a declared class \(cat, dog\)"):
        read_manifest(src, "label", ["cat", "dog"])


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ('[[5, 0, 1, 4, "a"]]', "needs x2 > x1"),
        ('[[0, 0, 1, 4, "zebra"]]', "class 'zebra' is not a declared class"),
        ("[[0, 0, 1]]", "must be \\[x1, y1, x2, y2, class\\]"),
        ("not json", "not valid JSON"),
    ],
)
def test_bad_boxes(tmp_path: Path, boxes: str, message: str) -> None:
    _image(tmp_path / "a.png")
    src = _write(
        tmp_path / "m.csv", "image,boxes\na.png,'x'\n".replace("'x'", '"' + boxes.replace('"', '""') + '"')
    )
    with pytest.raises(DataError, match=message):
        read_manifest(src, "boxes", ["a"])


def test_missing_column_and_empty_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) label \(found: image\)"):
        read_manifest(_write(tmp_path / "m.csv", "image\na.png\n"), "label", ["a", "b"])
    with pytest.raises(DataError, match="has no rows"):
        read_manifest(_write(tmp_path / "e.csv", "image,label\n"), "label", ["a", "b"])
    with pytest.raises(DataError, match="manifest file not found"):
        read_manifest(ManifestSource(path=tmp_path / "nope.csv"), "label", ["a", "b"])


def test_bad_split_value(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    with pytest.raises(DataError, match="split 'training' is not one of train, val, test"):
        read_manifest(
            _write(tmp_path / "m.csv", "image,label,split\na.png,a,training\n"), "label", ["a", "b"]
        )


def test_labels_and_boxes_classes_can_be_inferred(tmp_path: Path) -> None:
    _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    src = _write(tmp_path / "m.csv", "image,label\na.png,pneumonia\nb.png,normal\n")
    assert src.infer_classes("label") == ["normal", "pneumonia"]
    boxes = json.dumps([[1, 2, 5, 6, "b"], [0, 0, 3, 3, "a"]]).replace('"', '""')
    assert _write(tmp_path / "d.csv", f'image,boxes\na.png,"{boxes}"\n').infer_classes("boxes") == ["a", "b"]


def test_dicom_rows_and_nifti_masks(tmp_path: Path) -> None:
    import nibabel as nib
    from pydicom.data import get_testdata_file

    nib.save(nib.Nifti1Image(np.ones((128, 128), np.uint8), np.eye(4)), tmp_path / "m.nii.gz")
    src = _write(tmp_path / "m.csv", f"image,mask\n{get_testdata_file('CT_small.dcm')},m.nii.gz\n")
    (record,) = read_manifest(src, "mask", ["background", "body"])
    pixels = decode_record(record)
    assert pixels.image.shape == (128, 128, 1) and pixels.mask is not None and pixels.mask.sum() == 128 * 128


def test_group_and_center_columns_and_image_only_rows(tmp_path: Path) -> None:
    _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    src = _write(tmp_path / "m.csv", "image,group,center\na.png,p1,site A\nb.png,,\n")
    a, b = read_manifest(src, "image", [])
    assert (a.group, a.center, a.label, a.mask) == ("p1", "site A", None, None)
    assert (b.group, b.center) == (None, None)

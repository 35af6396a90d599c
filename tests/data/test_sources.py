"""Image folders, segmentation pairs, COCO and MedMNIST sources, and the source config union."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from pydantic import TypeAdapter, ValidationError

from medfoundry.data import (
    CocoSource,
    ImageFolderSource,
    ManifestSource,
    MedMNISTSource,
    Preprocessing,
    SegmentationFoldersSource,
    SourceConfig,
    decode_record,
)
from medfoundry.errors import ConfigError, DataError
from tests.data.conftest import gray, write_png

PREP = Preprocessing()


def test_source_type_defaults_to_manifest_and_unknown_keys_are_named(tmp_path: Path) -> None:
    adapter = TypeAdapter(SourceConfig)
    assert isinstance(adapter.validate_python({"path": "m.csv"}), ManifestSource)
    assert isinstance(adapter.validate_python({"type": "coco", "path": "a.json"}), CocoSource)
    with pytest.raises(ValidationError, match=r"coco.imgs\n  Extra inputs are not permitted"):
        adapter.validate_python({"type": "coco", "path": "a.json", "imgs": "x"})
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        adapter.validate_python({"type": "nifti", "path": "x"})


def test_image_folder_infers_classes_from_subfolders(tmp_path: Path) -> None:
    for name in ("benign/a.png", "benign/b.png", "malignant/deep/c.png"):
        write_png(tmp_path / name, gray())
    source = ImageFolderSource(type="image_folder", path=tmp_path)
    assert source.infer_classes("label") == ["benign", "malignant"]
    records = source.scan(
        "label", classes=["benign", "malignant"], preprocessing=PREP, ignore_index=255
    ).records
    assert [(r.image.name, r.label) for r in records] == [("a.png", 0), ("b.png", 0), ("c.png", 1)]
    scan = source.scan("label", classes=["benign"], preprocessing=PREP, ignore_index=255)
    assert (
        len(scan.records) == 2
        and "subfolder 'malignant' is not a declared class (benign)" in scan.problems[0]
    )
    assert len(source.scan("image", classes=[], preprocessing=PREP, ignore_index=255).records) == 3


def test_image_folder_with_split_folders(tmp_path: Path) -> None:
    for name in ("train/cat/a.png", "val/cat/b.png", "val/dog/c.png"):
        write_png(tmp_path / name, gray())
    source = ImageFolderSource(type="image_folder", path=tmp_path, split_folders=True)
    records = source.scan(
        "label", classes=source.infer_classes("label"), preprocessing=PREP, ignore_index=255
    ).records
    assert [(r.split, r.label) for r in records] == [("train", 0), ("val", 0), ("val", 1)]


def test_segmentation_pairs_from_the_stardist_instance_mask(stardist_images: Path, tmp_path: Path) -> None:
    shutil.copy(
        stardist_images / "img2d.tif", (tmp_path / "images").mkdir() or tmp_path / "images" / "nuclei.tif"
    )
    shutil.copy(
        stardist_images / "mask2d.tif", (tmp_path / "masks").mkdir() or tmp_path / "masks" / "nuclei_mask.tif"
    )
    source = SegmentationFoldersSource(
        type="segmentation_folders",
        images=tmp_path / "images",
        masks=tmp_path / "masks",
        mask_suffix="_mask",
        mask_values="instances",
    )
    (record,) = source.scan(
        "mask", classes=["background", "nucleus"], preprocessing=PREP, ignore_index=255
    ).records
    pixels = decode_record(record)
    instances = tifffile.imread(stardist_images / "mask2d.tif")
    assert pixels.mask is not None and set(np.unique(pixels.mask)) == {0, 1}
    assert (pixels.mask == 1).sum() == (instances > 0).sum()
    (boxed,) = source.scan("boxes", classes=["nucleus"], preprocessing=PREP, ignore_index=255).records
    assert boxed.boxes is not None and len(boxed.boxes) == len(np.unique(instances)) - 1 == 125
    x1, y1, x2, y2, label = boxed.boxes[0]
    ys, xs = np.nonzero(instances == 1)
    assert (x1, y1, x2, y2, label) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0)


def test_segmentation_pairs_report_unmatched_files_and_map_values(tmp_path: Path) -> None:
    write_png(tmp_path / "images" / "a.png", gray())
    write_png(tmp_path / "images" / "b.png", gray())
    write_png(tmp_path / "masks" / "a.png", np.array([[0, 255]], np.uint8).repeat(8, 0).repeat(4, 1))
    write_png(tmp_path / "masks" / "zz.png", gray())
    source = SegmentationFoldersSource(
        type="segmentation_folders",
        images=tmp_path / "images",
        masks=tmp_path / "masks",
        mask_values={0: "background", 255: "lesion"},
    )
    scan = source.scan("mask", classes=["background", "lesion"], preprocessing=PREP, ignore_index=255)
    assert [r.image.name for r in scan.records] == ["a.png"]
    assert scan.problems == [
        f"{tmp_path / 'images' / 'b.png'}: no mask named b.* in {tmp_path / 'masks'}",
        f"{tmp_path / 'masks' / 'zz.png'}: mask without a matching image in {tmp_path / 'images'}",
    ]
    mask = decode_record(scan.records[0]).mask
    assert mask is not None and set(np.unique(mask)) == {0, 1}
    with pytest.raises(ConfigError, match="mask_values names tumour, not declared classes"):
        source.model_copy(update={"mask_values": {255: "tumour"}}).scan(
            "mask", classes=["background", "lesion"], preprocessing=PREP, ignore_index=255
        )


def test_a_0_255_mask_without_mask_values_is_an_error_not_dropped_pixels(tmp_path: Path) -> None:
    write_png(tmp_path / "images" / "a.png", gray())
    write_png(tmp_path / "masks" / "a.png", np.array([[0, 255]], np.uint8).repeat(8, 0).repeat(4, 1))
    source = SegmentationFoldersSource(
        type="segmentation_folders", images=tmp_path / "images", masks=tmp_path / "masks"
    )
    classes = ["background", "lesion"]
    (record,) = source.scan("mask", classes=classes, preprocessing=PREP, ignore_index=255).records
    with pytest.raises(DataError) as info:
        decode_record(record)
    (line,) = info.value.problems
    assert line.startswith(f"{tmp_path / 'masks' / 'a.png'}: ")
    assert "write mask_values: {0: background, 255: lesion}" in line
    # declaring mask_values says 255 really is unlabelled: then it is kept as the ignore index
    declared = source.model_copy(update={"mask_values": {0: "background"}})
    (record,) = declared.scan("mask", classes=classes, preprocessing=PREP, ignore_index=255).records
    mask = decode_record(record).mask
    assert mask is not None and set(np.unique(mask)) == {0, 255}


def _coco(tmp_path: Path, annotations: list[dict[str, object]]) -> CocoSource:
    write_png(tmp_path / "a.png", gray(20))
    write_png(tmp_path / "b.png", gray(20))
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 20, "height": 20},
            {"id": 2, "file_name": "b.png", "width": 20, "height": 20},
        ],
        "categories": [{"id": 7, "name": "cell"}, {"id": 3, "name": "debris"}],
        "annotations": annotations,
    }
    (tmp_path / "coco.json").write_text(json.dumps(data))
    return CocoSource(type="coco", path=tmp_path / "coco.json")


def test_coco_remaps_category_ids_and_keeps_images_without_objects(tmp_path: Path) -> None:
    source = _coco(
        tmp_path,
        [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [2, 3, 4, 5]},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 20]},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2], "iscrowd": 1},
        ],
    )
    assert source.infer_classes("boxes") == ["debris", "cell"]  # category id order
    a, b = source.scan("boxes", classes=["cell", "debris"], preprocessing=PREP, ignore_index=255).records
    assert [tuple(box) for box in a.boxes or ()] == [(2, 3, 6, 8, 0), (0, 0, 20, 20, 1)]
    assert b.boxes == ()


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({"category_id": 99, "bbox": [1, 1, 2, 2]}, "annotation 5: category_id 99 is not in 'categories'"),
        (
            {"category_id": 3, "bbox": [1, 1, 2, 2]},
            "annotation 5: bbox: class 'debris' is not a declared class",
        ),
        (
            {"category_id": 7, "bbox": [15, 1, 9, 2]},
            r"annotation 5: bbox \[15, 1, 9, 2\] lies outside image a.png \(20x20\)",
        ),
        ({"category_id": 7, "bbox": [5, 1, -2, 2]}, "annotation 5: bbox .* needs x2 > x1"),
        (
            {"category_id": 7, "image_id": 8, "bbox": [1, 1, 2, 2]},
            "annotation 5: image_id 8 is not in 'images'",
        ),
    ],
)
def test_coco_problems_name_the_annotation(
    tmp_path: Path, annotation: dict[str, object], message: str
) -> None:
    source = _coco(tmp_path, [{"id": 5, "image_id": 1, **annotation}])
    (problem,) = source.scan("boxes", classes=["cell"], preprocessing=PREP, ignore_index=255).problems
    assert problem.startswith(f"{tmp_path / 'coco.json'}: ") and re.search(message, problem)


def _medmnist(path: Path, labels: dict[str, np.ndarray], image_shape: tuple[int, ...] = (28, 28)) -> Path:
    """A file in MedMNIST's layout (real MedMNIST files come from Zenodo, which is offline here)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, split_labels in labels.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(split_labels), *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = split_labels
    np.savez_compressed(path, **arrays)
    return path


def test_medmnist_multiclass_and_chestmnist_multilabel(tmp_path: Path) -> None:
    path = _medmnist(
        tmp_path / "pathmnist.npz",
        {"train": np.array([[0], [2], [1]]), "val": np.array([[2]]), "test": np.array([[0]])},
        (28, 28, 3),
    )
    source = MedMNISTSource(type="medmnist", path=path)
    assert source.infer_classes("label") == ["0", "1", "2"]
    records = source.scan("label", classes=["a", "b", "c"], preprocessing=PREP, ignore_index=255).records
    assert [(r.split, r.label) for r in records] == [
        ("train", 0),
        ("train", 2),
        ("train", 1),
        ("val", 2),
        ("test", 0),
    ]
    with np.load(path) as data:
        expected = data["val_images"][0] / 255
    np.testing.assert_allclose(decode_record(records[3]).image, expected, atol=1e-6)
    chest = MedMNISTSource(
        type="medmnist", path=_medmnist(tmp_path / "chest.npz", {"train": np.eye(14, dtype=np.uint8)[:3]})
    )
    records = chest.scan(
        "multilabel", classes=chest.infer_classes("multilabel"), preprocessing=PREP, ignore_index=255
    ).records
    assert len(records) == 3 and records[1].labels == tuple(float(i == 1) for i in range(14))
    assert decode_record(records[0]).image.shape == (28, 28, 1)


def test_medmnist_rejects_3d_and_mismatched_labels(tmp_path: Path) -> None:
    organ3d = MedMNISTSource(
        type="medmnist", path=_medmnist(tmp_path / "o3d.npz", {"train": np.zeros((2, 1))}, (28, 28, 28))
    )
    with pytest.raises(
        DataError, match=r"train_images has shape \(2, 28, 28, 28\).*3D MedMNIST datasets are not supported"
    ):
        organ3d.scan("label", classes=["a"], preprocessing=PREP, ignore_index=255)
    chest = MedMNISTSource(type="medmnist", path=_medmnist(tmp_path / "c.npz", {"train": np.zeros((2, 14))}))
    with pytest.raises(DataError, match="a multilabel dataset"):
        chest.scan("label", classes=["a", "b"], preprocessing=PREP, ignore_index=255)


def test_medmnist_large_arrays_are_streamed_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfoundry.data.sources import medmnist

    monkeypatch.setattr(medmnist, "LOAD_WHOLE_BYTES", 100)  # force streaming for a small file
    path = _medmnist(tmp_path / "p.npz", {"train": np.zeros((5, 1), np.uint8)})
    records = (
        MedMNISTSource(type="medmnist", path=path)
        .scan("label", classes=["a"], preprocessing=PREP, ignore_index=255)
        .records
    )
    with np.load(path) as data:
        images = data["train_images"]
    for i in (0, 3, 4, 1):  # forwards, then back to the start
        np.testing.assert_allclose(decode_record(records[i]).image[..., 0], images[i] / 255, atol=1e-6)

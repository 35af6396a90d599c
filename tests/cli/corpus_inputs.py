"""Tiny real inputs for the bad-input corpus, and writers of every source format.

The pixels are crops of real packaged images (stardist's fluorescence nuclei with their instance
mask, scikit-image's retina photograph, pydicom's CT and MR slices, nibabel's MR volume), cut
small so that each case decodes in milliseconds. Each writer produces a *valid* task of its
source type; the corpus then breaks one thing in it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile
import yaml
from PIL import Image

from tests.packaged import package_folder

SIDE = 16


@dataclass(frozen=True)
class RealPixels:
    """Real images the corpus crops from."""

    nuclei: np.ndarray  # (512, 512) uint8 fluorescence
    instances: np.ndarray  # (512, 512) instance ids of the nuclei
    retina: np.ndarray  # (H, W, 3) uint8 fundus photograph
    volume: np.ndarray  # (33, 41, 25) MR volume (nibabel's anatomical.nii)
    ct: Path  # pydicom's CT_small.dcm
    mr: Path  # pydicom's MR_small.dcm


def load_real_pixels() -> RealPixels:
    from nibabel.testing import data_path
    from pydicom.data import get_testdata_file

    stardist = package_folder("stardist") / "data" / "images"
    with Image.open(package_folder("skimage") / "data" / "retina.jpg") as retina:
        rgb = np.asarray(retina.convert("RGB"))
    volume = np.asarray(nib.load(Path(data_path) / "anatomical.nii").dataobj)  # type: ignore[attr-defined]
    return RealPixels(
        tifffile.imread(stardist / "img2d.tif").astype(np.uint8),
        tifffile.imread(stardist / "mask2d.tif"),
        rgb,
        volume,
        Path(str(get_testdata_file("CT_small.dcm"))),
        Path(str(get_testdata_file("MR_small.dcm"))),
    )


class Inputs:
    """Writes valid tasks of every source type into ``folder`` (see module docstring)."""

    def __init__(self, folder: Path, real: RealPixels) -> None:
        self.folder, self.real = folder, real

    # --- pixels ---
    def gray(self, i: int, side: int = SIDE) -> np.ndarray:
        y, x = 100 + 37 * (i % 8), 60 + 41 * (i // 8)
        return np.ascontiguousarray(self.real.nuclei[y : y + side, x : x + side])

    def mask(self, i: int, side: int = SIDE) -> np.ndarray:
        y, x = 100 + 37 * (i % 8), 60 + 41 * (i // 8)
        return (self.real.instances[y : y + side, x : x + side] > 0).astype(np.uint8)

    def colour(self, i: int, side: int = SIDE) -> np.ndarray:
        y, x = 500 + 29 * i, 500 + 31 * i
        return np.ascontiguousarray(self.real.retina[y : y + side, x : x + side])

    def png(self, name: str, array: np.ndarray) -> Path:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        return path

    # --- task databases and configs ---
    def database(self, *tasks: dict[str, Any], **data: Any) -> Path:
        path = self.folder / "tasks.yaml"
        path.write_text(yaml.safe_dump({"tasks": list(tasks), "data": {"val_fraction": 0.25, **data}}))
        return path

    def pretrain_config(self, *tasks: dict[str, Any], **overrides: Any) -> Path:
        from tests.conftest import tiny_config

        run_dir = overrides.pop("run_dir", self.folder / "run")
        cfg = tiny_config(run_dir, list(tasks), **{"training.max_steps": 2, **overrides})
        path = self.folder / "pretrain.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    # --- one valid task per source type ---
    def classification(self, labels: tuple[str, ...] = ("a", "b") * 4, **task: Any) -> dict[str, Any]:
        rows = ["image,label"]
        for i, label in enumerate(labels):
            self.png(f"cls/{i}.png", self.gray(i))
            rows.append(f"cls/{i}.png,{label}")
        (self.folder / "cls.csv").write_text("\n".join(rows) + "\n")
        spec = {"name": "cls", "type": "classification", "classes": sorted(set(labels))}
        return {**spec, "source": {"path": str(self.folder / "cls.csv")}, **task}

    def multilabel(self) -> dict[str, Any]:
        rows = ["image,x,y"] + [f"ml/{i}.png,{i % 2},{(i // 2) % 2}" for i in range(8)]
        for i in range(8):
            self.png(f"ml/{i}.png", self.gray(i))
        (self.folder / "ml.csv").write_text("\n".join(rows) + "\n")
        return {"name": "ml", "type": "multilabel", "classes": ["x", "y"], "source": {"path": "ml.csv"}}

    def segmentation(self, n: int = 6) -> dict[str, Any]:
        rows = ["image,mask"]
        for i in range(n):
            self.png(f"seg/{i}.png", self.gray(i))
            self.png(f"seg/{i}_mask.png", self.mask(i))
            rows.append(f"seg/{i}.png,seg/{i}_mask.png")
        (self.folder / "seg.csv").write_text("\n".join(rows) + "\n")
        spec = {"name": "seg", "type": "segmentation", "classes": ["background", "nucleus"]}
        return {**spec, "source": {"path": "seg.csv"}}

    def detection(self, n: int = 6) -> dict[str, Any]:
        rows = ["image,boxes"]
        for i in range(n):
            self.png(f"det/{i}.png", self.gray(i))
            rows.append(f'det/{i}.png,"[[2, 2, 9, 10, ""nucleus""]]"')
        (self.folder / "det.csv").write_text("\n".join(rows) + "\n")
        return {"name": "det", "type": "detection", "classes": ["nucleus"], "source": {"path": "det.csv"}}

    def image_folder(self) -> dict[str, Any]:
        for i in range(8):
            self.png(f"folders/{'ab'[i % 2]}/{i}.png", self.gray(i))
        spec = {"name": "folders", "type": "classification", "classes": ["a", "b"]}
        return {**spec, "source": {"type": "image_folder", "path": "folders"}}

    def segmentation_folders(self) -> dict[str, Any]:
        for i in range(6):
            self.png(f"pairs/images/{i}.png", self.gray(i))
            self.png(f"pairs/masks/{i}_mask.png", self.mask(i))
        source = {"type": "segmentation_folders", "images": "pairs/images", "masks": "pairs/masks"}
        spec = {"name": "pairs", "type": "segmentation", "classes": ["background", "nucleus"]}
        return {**spec, "source": {**source, "mask_suffix": "_mask"}}

    def coco(self, annotations: list[Any] | None = None) -> dict[str, Any]:
        images = []
        for i in range(6):
            self.png(f"coco/{i}.png", self.gray(i))
            images.append({"id": i + 1, "file_name": f"{i}.png", "width": SIDE, "height": SIDE})
        boxes = [{"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [2, 2, 6, 7]} for i in range(6)]
        data = {
            "images": images,
            "annotations": boxes if annotations is None else annotations,
            "categories": [{"id": 7, "name": "nucleus"}],
        }
        (self.folder / "coco" / "coco.json").write_text(json.dumps(data))
        spec = {"name": "coco", "type": "detection", "classes": ["nucleus"]}
        return {**spec, "source": {"type": "coco", "path": "coco/coco.json"}}

    def medmnist(self, **arrays: np.ndarray) -> dict[str, Any]:
        crops = np.stack([self.gray(i, 28) for i in range(12)])
        content = {
            "train_images": crops[:8],
            "train_labels": (np.arange(8) % 2)[:, None],
            "val_images": crops[8:],
            "val_labels": (np.arange(4) % 2)[:, None],
            **arrays,
        }
        np.savez(self.folder / "mnist.npz", **content)  # type: ignore[arg-type]
        spec = {"name": "mnist", "type": "classification", "classes": ["a", "b"]}
        return {**spec, "source": {"type": "medmnist", "path": "mnist.npz"}}

    def dicom(self) -> dict[str, Any]:
        (self.folder / "dicom").mkdir(exist_ok=True)
        for i in range(3):
            shutil.copy(self.real.ct, self.folder / "dicom" / f"ct{i}.dcm")
            shutil.copy(self.real.mr, self.folder / "dicom" / f"mr{i}.dcm")
        spec = {"name": "dcm", "type": "classification", "classes": ["CT", "MR"]}
        return {**spec, "source": {"type": "dicom", "path": "dicom", "label_tag": "Modality"}}

    def volume(self, label_name: str = "case_label.nii.gz") -> dict[str, Any]:
        (self.folder / "vol").mkdir(exist_ok=True)
        data = self.real.volume[:, :, :6]
        nib.save(nib.Nifti1Image(data, np.eye(4)), self.folder / "vol" / "case_image.nii.gz")
        labels = (data > np.percentile(data, 60)).astype(np.uint8)
        nib.save(nib.Nifti1Image(labels, np.eye(4)), self.folder / "vol" / label_name)
        source = {"type": "volume", "images": "vol", "labels": "vol", "image_suffix": "_image"}
        spec = {"name": "vol", "type": "segmentation", "classes": ["background", "bright"]}
        return {**spec, "source": {**source, "label_suffix": "_label"}}

    def all_sources(self) -> list[dict[str, Any]]:
        """One valid task of every source type (and task type)."""
        return [
            self.classification(),
            self.multilabel(),
            self.segmentation(),
            self.detection(),
            self.image_folder(),
            self.segmentation_folders(),
            self.coco(),
            self.medmnist(),
            self.dicom(),
            self.volume(),
        ]

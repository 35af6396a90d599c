"""What ``medfoundry predict`` reads: a new volume is sliced as the task's own source slices its
volumes (the source type's ``prediction_reading``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nibabel.testing import data_path as nibabel_data_path

from medfoundry.recipes.predict.inputs import prediction_records
from medfoundry.tasks import TaskSpec

MR = Path(nibabel_data_path) / "anatomical.nii"  # nibabel's real MR volume, 33x41x25, stored LAS


def _segmentation(source: dict[str, object]) -> TaskSpec:
    return TaskSpec(name="bright", type="segmentation", classes=["background", "bright"], source=source)


@pytest.mark.parametrize(("axis", "slices"), [("axial", 25), ("coronal", 41), ("sagittal", 33)])
def test_a_new_volume_is_sliced_along_the_axis_of_the_tasks_volume_source(axis: str, slices: int) -> None:
    spec = _segmentation({"type": "volume", "images": str(MR.parent), "axis": axis})
    records, ids = prediction_records(MR, spec)
    assert len(records) == slices
    assert ids[:2] == ["anatomical.nii#0", "anatomical.nii#1"]


def test_a_new_volume_is_resampled_to_the_spacing_of_the_tasks_dicom_source() -> None:
    # anatomical.nii has 2 mm voxels: 1 mm in-plane doubles each axial slice's side
    spec = _segmentation({"type": "dicom", "path": str(MR.parent), "spacing_mm": [1.0, 1.0]})
    records, _ = prediction_records(MR, spec)
    assert len(records) == 25
    reader = records[0].reader
    assert reader is not None and reader.read(records[0]).image.shape[:2] == (82, 66)


def test_a_task_of_2d_images_reads_a_new_volume_in_axial_slices_as_stored() -> None:
    spec = _segmentation({"type": "segmentation_folders", "images": "i", "masks": "m"})
    records, _ = prediction_records(MR, spec)
    assert len(records) == 25

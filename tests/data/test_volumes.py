"""NIfTI / NRRD volumes: nibabel's real test volumes, orientation, labels, slice selection."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

from medfoundry.data import Preprocessing, VolumeSource, decode_record
from medfoundry.data.intensity import WindowIntensity
from medfoundry.data.volumes import load_volume, volume_slice


def _marker_volume() -> np.ndarray:
    """A (X, Y, Z) RAS volume with one bright voxel towards the patient's right, anterior, superior."""
    data = np.zeros((6, 7, 5), np.int16)
    data[5, 6, 4] = 100  # x high = right, y high = anterior, z high = superior
    return data


def test_slices_are_shown_the_radiological_way() -> None:
    data = _marker_volume()
    axial = volume_slice(data, "axial", 4)
    assert axial.shape == (7, 6) and axial[0, 0] == 100  # anterior up, patient's right on the left
    coronal = volume_slice(data, "coronal", 6)
    assert coronal.shape == (5, 6) and coronal[0, 0] == 100  # superior up, right on the left
    sagittal = volume_slice(data, "sagittal", 5)
    assert sagittal.shape == (5, 7) and sagittal[0, 0] == 100  # superior up, anterior on the left


def test_storage_order_does_not_change_the_slices(tmp_path: Path) -> None:
    data = _marker_volume()
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "ras.nii.gz")
    # the same volume stored left-to-right and inferior-first (LAI), and as NRRD in LPS space
    flipped = data[::-1, :, ::-1]
    nib.save(nib.Nifti1Image(flipped, np.diag([-2.0, 2.0, -3.0, 1.0])), tmp_path / "lai.nii.gz")
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([-2.0, -2.0, 3.0]),
        "space origin": np.zeros(3),
    }
    nrrd.write(str(tmp_path / "lps.nrrd"), data, header)
    volumes = [load_volume(tmp_path / name, None) for name in ("ras.nii.gz", "lai.nii.gz", "lps.nrrd")]
    for volume in volumes:
        assert volume.zooms == (2.0, 2.0, 3.0)
        np.testing.assert_array_equal(volume_slice(volume.data, "axial", 4), volume_slice(data, "axial", 4))


def _with_labels(nibabel_data: Path, tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """nibabel's anatomical.nii (MR, 33x41x25, 2 mm) with a label volume of its brightest voxels."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    shutil.copy(nibabel_data / "anatomical.nii", images / "anat.nii")
    volume = nib.load(images / "anat.nii")
    data = np.asanyarray(volume.dataobj)
    label = np.zeros(data.shape, np.uint8)
    label[:, :, 10:14] = data[:, :, 10:14] > np.percentile(data, 70)  # only 4 axial slices labelled
    nib.save(nib.Nifti1Image(label, volume.affine), labels / "anat_seg.nii.gz")
    return images, labels, label


def test_label_volumes_slices_and_foreground_selection(nibabel_data: Path, tmp_path: Path) -> None:
    images, labels, label = _with_labels(nibabel_data, tmp_path)
    source = VolumeSource(type="volume", images=images, labels=labels, label_suffix="_seg")
    records = source.scan(
        "mask", classes=["background", "bright"], preprocessing=Preprocessing(), ignore_index=255
    ).records
    assert len(records) == 25 and {r.group for r in records} == {"anat"}
    pixels = decode_record(records[12])
    assert pixels.image.shape == (41, 33, 1) and pixels.mask is not None and pixels.mask.shape == (41, 33)
    assert pixels.mask.sum() == label[:, :, 12].sum()
    foreground = source.model_copy(update={"slices": "foreground"})
    assert [
        r.frame
        for r in foreground.scan(
            "mask", classes=["background", "bright"], preprocessing=Preprocessing(), ignore_index=255
        ).records
    ] == [
        10,
        11,
        12,
        13,
    ]
    with_background = source.model_copy(update={"slices": "foreground", "background_ratio": 0.5})
    frames = [
        r.frame
        for r in with_background.scan(
            "mask", classes=["background", "bright"], preprocessing=Preprocessing(), ignore_index=255
        ).records
    ]
    assert frames == [0, 10, 11, 12, 13, 24]  # two background slices, evenly spaced


def test_resampling_windows_and_4d(nibabel_data: Path) -> None:
    source = VolumeSource(
        type="volume", images=nibabel_data / "anatomical.nii", axis="sagittal", spacing_mm=(1.0, 1.0)
    )
    records = source.scan("image", classes=[], preprocessing=Preprocessing(), ignore_index=255).records
    assert len(records) == 33
    assert decode_record(records[16]).image.shape == (50, 82, 1)  # 25 x 41 slices at 2 mm -> 1 mm
    windowed = source.scan(
        "image",
        classes=[],
        preprocessing=Preprocessing(intensity=WindowIntensity(windows=["brain"])),
        ignore_index=255,
    ).records
    assert decode_record(windowed[16]).image.shape == (50, 82, 3)
    four_d = VolumeSource(type="volume", images=nibabel_data / "example4d.nii.gz")
    scan = four_d.scan(
        "image", classes=[], preprocessing=Preprocessing(), ignore_index=255
    )  # found from the header: one line, no slices
    assert scan.records == [] and len(scan.problems) == 1
    assert "the file is 4D (shape (128, 96, 24, 2)); set source.volume_index" in scan.problems[0]
    second = (
        four_d.model_copy(update={"volume_index": 1})
        .scan("image", classes=[], preprocessing=Preprocessing(), ignore_index=255)
        .records
    )
    assert len(second) == 24 and decode_record(second[0]).image.shape == (96, 128, 1)


def test_image_and_label_shape_mismatch_is_named(nibabel_data: Path, tmp_path: Path) -> None:
    images, labels, label = _with_labels(nibabel_data, tmp_path)
    nib.save(nib.Nifti1Image(label[:, :, :20], np.eye(4)), labels / "anat_seg.nii.gz")
    source = VolumeSource(type="volume", images=images, labels=labels, label_suffix="_seg")
    scan = source.scan(
        "mask", classes=["background", "bright"], preprocessing=Preprocessing(), ignore_index=255
    )
    assert scan.records == []
    assert scan.problems == [
        f"{labels / 'anat_seg.nii.gz'}: label volume shape (33, 41, 20) differs from image "
        f"{images / 'anat.nii'} shape (33, 41, 25) (after reorientation to RAS)"
    ]

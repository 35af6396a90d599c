"""DICOM on real files: pydicom's CT_small and MR_small, pydicom-data's CR chest radiograph."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medfoundry.data import DicomSource, Preprocessing, decode_image, decode_record
from medfoundry.data.intensity import AutoIntensity, RangeIntensity, WindowIntensity
from medfoundry.errors import DataError

DicomFile = Callable[[str], Path]


def test_ct_rescale_slope_and_intercept_give_hu_for_windows(dicom_file: DicomFile) -> None:
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)  # -1024 offset in this file
    image = decode_image(
        path, intensity=WindowIntensity(windows=[{"level_hu": 0, "width_hu": 2000}]), frame=None
    )
    np.testing.assert_allclose(image[..., 0], np.clip((hu + 1000) / 2000, 0, 1), atol=1e-5)
    lung_soft_bone = decode_image(
        path, intensity=WindowIntensity(windows=["lung", "soft_tissue", "bone"]), frame=None
    )
    assert lung_soft_bone.shape == (128, 128, 3)
    assert not np.allclose(lung_soft_bone[..., 0], lung_soft_bone[..., 1])


def test_enhanced_ct_takes_rescale_and_window_from_its_functional_groups(
    dicom_file: DicomFile, tmp_path: Path
) -> None:
    path = dicom_file("eCT_Supplemental.dcm")  # enhanced CT, 2 frames; rescale -1024 and window 49/102 shared
    ds = pydicom.dcmread(path)
    assert "RescaleIntercept" not in ds and "WindowCenter" not in ds  # only in the functional groups
    hu = ds.pixel_array[1].astype(np.float64) - 1024
    image = decode_image(
        path, intensity=WindowIntensity(windows=[{"level_hu": 40, "width_hu": 400}]), frame=1
    )
    np.testing.assert_allclose(image[..., 0], np.clip((hu + 160) / 400, 0, 1), atol=1e-5)
    auto = decode_image(path, intensity=AutoIntensity(), frame=1)[..., 0]
    np.testing.assert_allclose(auto, np.clip((hu - 48.5) / 101 + 0.5, 0, 1), atol=1e-5)  # PS3.3 C.11.2.1.2

    # a frame's own group wins over the shared one
    frame = ds.PerFrameFunctionalGroupsSequence[1]
    frame.PixelValueTransformationSequence = pydicom.Sequence([pydicom.Dataset()])
    own = frame.PixelValueTransformationSequence[0]
    own.RescaleIntercept, own.RescaleSlope, own.RescaleType = -1000, 2, "HU"
    ds.save_as(tmp_path / "own.dcm")
    image = decode_image(
        tmp_path / "own.dcm", intensity=WindowIntensity(windows=[{"level_hu": 40, "width_hu": 400}]), frame=1
    )
    expected = np.clip((ds.pixel_array[1] * 2.0 - 1000 + 160) / 400, 0, 1)
    np.testing.assert_allclose(image[..., 0], expected, atol=1e-5)


def test_monochrome1_radiograph_is_inverted_after_its_window(dicom_file: DicomFile) -> None:
    path = dicom_file("RG1_UNCR.dcm")  # CR chest, MONOCHROME1, window 15000/30000 in the header
    ds = pydicom.dcmread(path)
    image = decode_image(path, intensity=AutoIntensity(), frame=None)[..., 0]
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = 1 - np.clip((ds.pixel_array - (center - 0.5)) / (width - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_allclose(image, expected, atol=1e-4)


def test_mr_without_window_and_windows_on_mr_refused(dicom_file: DicomFile) -> None:
    path = dicom_file("MR_small.dcm")
    image = decode_image(path, intensity=RangeIntensity(), frame=None)
    assert image.shape == (64, 64, 1) and 0 <= image.min() < image.max() <= 1
    with pytest.raises(
        DataError, match="MR_small.dcm: CT windows \\(HU\\) need a CT image; this is modality MR"
    ):
        decode_image(path, intensity=WindowIntensity(windows=["brain"]), frame=None)


def test_multi_frame_needs_a_frame(dicom_file: DicomFile) -> None:
    path = dicom_file("emri_small.dcm")  # 10 frames of 64x64 MR
    assert decode_image(path, intensity=AutoIntensity(), frame=9).shape == (64, 64, 1)
    with pytest.raises(DataError, match="has 10 frames; a frame index 0..9 is needed"):
        decode_image(path, intensity=AutoIntensity(), frame=None)


def test_truncated_and_empty_dicom_give_one_clear_error(dicom_file: DicomFile, tmp_path: Path) -> None:
    data = dicom_file("CT_small.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 5000])
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(DataError, match=r"cut.dcm: cannot decode DICOM pixels \(transfer syntax Explicit VR"):
        decode_image(tmp_path / "cut.dcm", intensity=AutoIntensity(), frame=None)
    with pytest.raises(DataError, match=r"empty.dcm: file is empty \(0 bytes\)"):
        decode_image(tmp_path / "empty.dcm", intensity=AutoIntensity(), frame=None)


def test_a_dicom_file_without_its_preamble_is_read_as_stored(dicom_file: DicomFile, tmp_path: Path) -> None:
    """Older writers leave out the 128-byte preamble and ``DICM`` marker (pydicom's
    OT-PAL-8-face.dcm, a real palette-colour photograph): its elements are read in the encoding
    they were written in; bytes that describe no image are still refused."""
    path = dicom_file("OT-PAL-8-face.dcm")
    assert path.read_bytes()[128:132] != b"DICM"
    image = decode_image(path, intensity=RangeIntensity(), frame=None)
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    reference = pydicom.pixels.apply_color_lut(ds.pixel_array, ds)
    assert image.shape[:2] == reference.shape[:2] == (480, 640)
    assert np.corrcoef(image[..., 0].ravel(), reference[..., 0].ravel())[0, 1] > 0.99
    (tmp_path / "notes.dcm").write_bytes(b"not an image, just text " * 20)
    with pytest.raises(DataError, match=r"notes.dcm: cannot read DICOM"):
        decode_image(tmp_path / "notes.dcm", intensity=AutoIntensity(), frame=None)


def _ct_series(dicom_file: DicomFile, folder: Path, slices: int = 4) -> None:
    """CT_small's real pixels as a series: shifted copies 5 mm apart, saved in reverse name order
    and without suffix (as many archives do)."""
    series = generate_uid()
    for k in range(slices):
        ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * k]
        ds.PixelData = np.roll(ds.pixel_array, 10 * k, axis=1).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"IM{slices - k:04d}")


def test_folder_with_a_ct_series_and_single_images(dicom_file: DicomFile, tmp_path: Path) -> None:
    _ct_series(dicom_file, tmp_path)
    shutil.copy(dicom_file("MR_small.dcm"), tmp_path / "mr.dcm")
    (tmp_path / "README.txt").write_text("not DICOM")
    scan = DicomSource(type="dicom", path=tmp_path).scan(
        "image", classes=[], preprocessing=Preprocessing(), ignore_index=255
    )
    assert scan.problems == []
    series = [r for r in scan.records if r.frame is not None]
    assert [r.frame for r in series] == [0, 1, 2, 3] and len(scan.records) == 5
    assert {r.group for r in series} == {"1CT1"} and series[0].center == "JFK IMAGING CENTER"
    # slices come in position order (the lowest first, whatever the file names), and an axial
    # slice looks as the scanner stored it (rows anterior to posterior, columns right to left)
    window = Preprocessing(intensity=WindowIntensity(windows=["soft_tissue"]))
    windowed = (
        DicomSource(type="dicom", path=tmp_path)
        .scan("image", classes=[], preprocessing=window, ignore_index=255)
        .records
    )
    original = decode_image(dicom_file("CT_small.dcm"), intensity=window.intensity, frame=None)
    np.testing.assert_allclose(decode_record(windowed[0]).image, original, atol=1e-6)
    coronal = DicomSource(type="dicom", path=tmp_path, axis="coronal").scan(
        "image", classes=[], preprocessing=Preprocessing(), ignore_index=255
    )
    assert sum(r.frame is not None for r in coronal.records) == 128
    assert decode_record(coronal.records[0]).image.shape == (4, 128, 1)


def test_classification_by_a_header_keyword(dicom_file: DicomFile, tmp_path: Path) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(dicom_file(name), tmp_path / name)
    source = DicomSource(type="dicom", path=tmp_path, label_tag="Modality")
    classes = source.infer_classes("label")
    assert classes == ["CT", "MR"]
    records = source.scan("label", classes=classes, preprocessing=Preprocessing(), ignore_index=255).records
    assert sorted((r.image.name, r.label) for r in records) == [("CT_small.dcm", 0), ("MR_small.dcm", 1)]
    with pytest.raises(DataError, match="label_tag, a DICOM keyword"):
        DicomSource(type="dicom", path=tmp_path, label_tag="Modalty").scan(
            "label", classes=classes, preprocessing=Preprocessing(), ignore_index=255
        )

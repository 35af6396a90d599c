"""Studies on sources whose samples share a file (MedMNIST arrays, volume slices): every sample
gets its own features, and the task's preprocessing (intensity, channels, fit) is the one
pretraining uses."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path as nibabel_data

from medfoundry.data import Preprocessing, VolumeSource, volumes
from medfoundry.data.intensity import PercentileIntensity
from medfoundry.evaluation.features import extract_features, features_key
from medfoundry.evaluation.pretrained_encoder import load_encoder
from medfoundry.evaluation.study_data import load_study_task_data
from medfoundry.recipes import evaluate
from medfoundry.recipes.evaluate.config import StudyConfig
from medfoundry.tasks import TaskSpec, build_task
from tests.evaluation.conftest import study_config
from tests.packaged import TECHNIQUES

PER_SPLIT = {"train": 24, "val": 4, "test": 8}


def _technique_npz(path: Path) -> Path:
    """A MedMNIST-layout file of 28x28 crops of the real packaged images of five imaging
    techniques (fundus, IHC, phase contrast, H&E, fluorescence); the label is the technique."""
    rng = np.random.default_rng(0)
    arrays: dict[str, list[np.ndarray]] = {}
    for label, load in enumerate(TECHNIQUES.values()):
        source = load()
        source = np.repeat(source[..., None], 3, axis=-1) if source.ndim == 2 else source
        height, width = source.shape[:2]
        margin = height // 7 if label == 0 else 0  # inside the fundus disc
        for split, count in PER_SPLIT.items():
            for _ in range(count):
                y = int(rng.integers(margin, height - margin - 28))
                x = int(rng.integers(margin, width - margin - 28))
                arrays.setdefault(f"{split}_images", []).append(source[y : y + 28, x : x + 28])
                arrays.setdefault(f"{split}_labels", []).append(np.array([label]))
    np.savez_compressed(path, **{k: np.stack(v).astype(np.uint8) for k, v in arrays.items()})
    return path


def test_linear_probe_on_a_medmnist_file_sees_every_item(checkpoint: Path, tmp_path: Path) -> None:
    task = {
        "name": "technique",
        "type": "classification",
        "classes": list(TECHNIQUES),
        "source": {"type": "medmnist", "path": str(_technique_npz(tmp_path / "technique.npz"))},
    }
    cfg = study_config(
        tmp_path / "study",
        [task],
        checkpoint,
        modes=["linear"],
        fractions=[1.0],
        seeds=1,
        probe={"c_values": [0.1, 1.0, 10.0]},
    )
    study_dir = evaluate.run(StudyConfig.model_validate(cfg))
    with (study_dir / "results.csv").open() as f:
        accuracy = {
            row["encoder"]: float(row["value"]) for row in csv.DictReader(f) if row["metric"] == "accuracy"
        }
    # 40 test crops of 5 techniques: one shared feature vector for all items would predict one
    # class for all of them (accuracy 0.2)
    assert accuracy["pretrained"] >= 0.6 and accuracy["random"] >= 0.6, accuracy


@pytest.fixture(scope="module")
def anatomy(tmp_path_factory: pytest.TempPathFactory) -> VolumeSource:
    """Four copies of nibabel's real MR test volume (33x41x25), each with a label volume of its
    brightest voxels (four volumes: enough groups for train, val and test)."""
    root = tmp_path_factory.mktemp("anatomy")
    (root / "images").mkdir(), (root / "labels").mkdir()
    volume = nib.load(Path(nibabel_data) / "anatomical.nii")
    data = np.asanyarray(volume.dataobj)
    label = (data > np.percentile(data, 70)).astype(np.uint8)
    for i in range(4):
        shutil.copy(Path(nibabel_data) / "anatomical.nii", root / "images" / f"anat{i}.nii")
        nib.save(nib.Nifti1Image(label, volume.affine), root / "labels" / f"anat{i}.nii.gz")
    return VolumeSource(type="volume", images=root / "images", labels=root / "labels")


def _spec(source: VolumeSource, preprocessing: Preprocessing) -> TaskSpec:
    return TaskSpec(
        name="anat",
        type="segmentation",
        classes=["background", "bright"],
        source=source,
        preprocessing=preprocessing,
    )


def test_volume_slices_use_the_task_intensity_and_key_their_features(
    anatomy: VolumeSource, checkpoint: Path
) -> None:
    narrow = _spec(anatomy, Preprocessing(intensity=PercentileIntensity(low=40, high=60)))
    wide = _spec(anatomy, Preprocessing(intensity=PercentileIntensity(low=0, high=100)))
    encoder = load_encoder(checkpoint)
    records = {}
    for name, spec in (("narrow", narrow), ("wide", wide)):
        data = load_study_task_data(
            spec, build_task(spec), split_seed=0, val_fraction=0.25, test_fraction=0.34
        )
        assert len({r.key for r in data.records}) == len(data.records) == 100  # one per slice
        records[name] = [r for r in data.records if r.image.name == "anat0.nii"][10:16]
    keys = {name: features_key(encoder, r, preprocessing=narrow.preprocessing) for name, r in records.items()}
    assert keys["narrow"] != keys["wide"]  # same files and slices, other intensity
    assert (
        features_key(encoder, records["narrow"][::-1], preprocessing=narrow.preprocessing) != keys["narrow"]
    )
    narrow_features = extract_features(encoder, records["narrow"], preprocessing=narrow.preprocessing)
    wide_features = extract_features(encoder, records["wide"], preprocessing=wide.preprocessing)
    assert not np.allclose(narrow_features, wide_features, atol=1e-3)
    assert len({row.tobytes() for row in narrow_features}) == 6  # each slice its own features


def test_task_channels_and_fit_reach_features_and_their_key(anatomy: VolumeSource, checkpoint: Path) -> None:
    spec = _spec(anatomy, Preprocessing())
    records = load_study_task_data(
        spec, build_task(spec), split_seed=0, val_fraction=0.25, test_fraction=0.34
    ).records[10:13]
    encoder = load_encoder(checkpoint)
    stretch, letterbox = Preprocessing(), Preprocessing(fit="letterbox")
    assert features_key(encoder, records, preprocessing=stretch) != features_key(
        encoder, records, preprocessing=letterbox
    )
    assert not np.allclose(
        extract_features(encoder, records, preprocessing=stretch),
        extract_features(encoder, records, preprocessing=letterbox),
        atol=1e-3,
    )


def test_training_cells_read_volume_slices_from_the_study_cache(
    anatomy: VolumeSource, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Path] = []
    real = volumes.load_volume
    monkeypatch.setattr(volumes, "load_volume", lambda path, *a: loads.append(path) or real(path, *a))
    task = {
        "name": "anat",
        "type": "segmentation",
        "classes": ["background", "bright"],
        "source": anatomy.model_dump(mode="json"),
    }
    cfg = study_config(
        tmp_path / "study", [task], checkpoint, modes=["frozen-decoder"], fractions=[1.0], seeds=1
    )
    cfg["encoders"] = cfg["encoders"][:1]
    study_dir = evaluate.run(StudyConfig.model_validate(cfg))
    with (study_dir / "results.csv").open() as f:
        dice = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "mean_dice"]
    assert len(dice) == 1 and 0 <= dice[0] <= 1
    # each image volume is read once, to build the cache (label volumes are also read to list
    # the classes of slices for the stratified subsets); decoding shuffled training slices
    # instead would read an image volume again for nearly every sample
    images = [p.name for p in loads if p.parent.name == "images"]
    assert sorted(images) == [f"anat{i}.nii" for i in range(4)], images

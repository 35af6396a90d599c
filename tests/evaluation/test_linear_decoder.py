"""The ``linear-decoder`` mode on real nuclei masks (stardist's packaged images)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfoundry.evaluation.linear_decoder import (
    DenseFeatures,
    LinearDecoderConfig,
    dense_features,
    fit_linear_decoder,
    score_decoder,
)
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder, load_encoder
from medfoundry.evaluation.study_data import StudyTaskData, load_study_task_data
from medfoundry.tasks import build_task, load_task_database

CFG = LinearDecoderConfig(max_iter=50, l2_values=[1e-3, 1e-1])


@pytest.fixture(scope="module")
def nuclei(small_db: Path) -> StudyTaskData:
    spec = next(s for s in load_task_database(small_db) if s.name == "nuclei_seg")
    return load_study_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.2)


@pytest.fixture(scope="module")
def encoder(checkpoint: Path) -> PretrainedEncoder:
    return load_encoder(checkpoint, pretrained=False, image_size=64)


def _features(encoder: PretrainedEncoder, data: StudyTaskData, split: str) -> DenseFeatures:
    return dense_features(encoder, data.task, data.splits[split], cfg=CFG)


def test_features_are_every_level_at_the_finest_resolution_channels_last(
    encoder: PretrainedEncoder, nuclei: StudyTaskData
) -> None:
    features = _features(encoder, nuclei, "val")
    with torch.inference_mode():
        pyramid = encoder(torch.zeros(1, 3, 64, 64))
    n = len(nuclei.splits["val"])
    assert features.maps.shape == (n, *pyramid[0].shape[-2:], sum(m.shape[1] for m in pyramid))
    assert features.targets.shape == (n, 64, 64) and features.targets.dtype == torch.int64
    deepest = dense_features(
        encoder, nuclei.task, nuclei.splits["val"], cfg=CFG.model_copy(update={"feature_levels": [-1]})
    )
    assert deepest.maps.shape[-1] == pyramid[-1].shape[1]


def test_segments_nuclei_better_than_background_everywhere_and_reproducibly(
    encoder: PretrainedEncoder, nuclei: StudyTaskData
) -> None:
    train, val, test = (_features(encoder, nuclei, s) for s in ("train", "val", "test"))
    fitted = fit_linear_decoder(nuclei.task, train, val, metric="mean_dice", cfg=CFG)
    assert set(fitted.val_scores) == set(CFG.l2_values)
    assert fitted.val_scores[fitted.l2] == max(fitted.val_scores.values())  # chosen on validation

    dice = score_decoder(fitted.decoder, nuclei.task, test).compute()["mean_dice"]
    background = nuclei.task.metrics()
    background.update(
        torch.stack([torch.eye(2)[0]] * len(test.targets))[..., None, None].expand(-1, -1, 64, 64),
        test.targets,
    )
    assert dice > background.compute()["mean_dice"] + 0.5  # nuclei are found, not only background

    again = fit_linear_decoder(nuclei.task, train, val, metric="mean_dice", cfg=CFG)
    assert torch.equal(again.decoder.linear.weight, fitted.decoder.linear.weight)  # no seed to set


def test_a_stronger_penalty_gives_smaller_weights(encoder: PretrainedEncoder, nuclei: StudyTaskData) -> None:
    train, val = _features(encoder, nuclei, "train"), _features(encoder, nuclei, "val")
    norms = {
        l2: fit_linear_decoder(
            nuclei.task, train, val, metric="mean_dice", cfg=CFG.model_copy(update={"l2_values": [l2]})
        ).decoder.linear.weight.norm()
        for l2 in (1e-3, 1e-1)
    }
    assert norms[1e-1] < 0.5 * norms[1e-3]

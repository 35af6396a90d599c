"""Fine-tuning and frozen-decoder training on real images, built from the engine's parts."""

from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path

import pytest
import torch

from medfoundry.data.augment import AugmentConfig
from medfoundry.data.task_records import load_task_records
from medfoundry.evaluation.finetune import (
    FinetuneConfig,
    _batch_size,
    _shared_optimizer,
    finetune,
    score_model,
)
from medfoundry.evaluation.pretrained_encoder import load_encoder
from medfoundry.models.build import build_multitask_model
from medfoundry.tasks import TaskSpec, build_task
from tests.evaluation.conftest import tasks_of

# the package exports the function ``finetune`` under the module's name
finetune_module = importlib.import_module("medfoundry.evaluation.finetune")

TINY = FinetuneConfig(
    max_steps=4,
    eval_every_steps=2,
    batch_size=8,
    pixel_decoder={"channels": 16, "embed_dim": 8},
    detection_decoder={"channels": 16, "num_convs": 1, "num_levels": 3},
)


def _task(small_db: Path, name: str) -> tuple:
    spec = TaskSpec.model_validate(next(t for t in tasks_of(small_db) if t["name"] == name))
    task = build_task(spec)
    return (
        spec,
        task,
        load_task_records(
            spec.name, spec.source, task.target, classes=spec.classes, seed=0, val_fraction=0.2
        ),
    )


@pytest.mark.parametrize(
    ("n", "wanted", "size"), [(100, 32, 32), (33, 32, 31), (9, 8, 7), (3, 2, 3), (1, 8, 1), (5, 32, 5)]
)
def test_batches_never_leave_a_single_image(n: int, wanted: int, size: int) -> None:
    assert _batch_size(n, wanted) == size and (n % size != 1 or n == 1)


def test_layerwise_decay_gives_deeper_blocks_larger_learning_rates(checkpoint: Path, small_db: Path) -> None:
    spec, task, _ = _task(small_db, "nuclei_seg")
    encoder = load_encoder(checkpoint)
    model = build_multitask_model(encoder.model_config(pixel_decoder=TINY.pixel_decoder), {spec.name: task})
    optimizer = _shared_optimizer(model, TINY.optimizer, layer_decay=0.5)
    lr_of = {id(p): g["peak_lr"] for g in optimizer.param_groups for p in g["params"]}
    backbone = model.encoder.backbone
    stem, last = backbone.conv1[0].weight, backbone.layer4[0].conv1.weight
    assert lr_of[id(last)] == pytest.approx(2 * lr_of[id(backbone.layer3[0].conv1.weight)])
    assert lr_of[id(stem)] < lr_of[id(last)] <= TINY.optimizer.lr
    # the decoder starts from scratch: it learns at the head's rate, not the fine-tuning rate
    assert TINY.optimizer.head_lr is not None and TINY.optimizer.head_lr > TINY.optimizer.lr
    assert all(lr_of[id(p)] == TINY.optimizer.head_lr for p in model.pixel_decoder.parameters())
    assert not any(id(p) in lr_of for p in model.heads.parameters())  # the head has its own optimizer


def test_a_tasks_augment_changes_the_studys_for_its_training_samples(
    checkpoint: Path, small_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task whose labels name sides turns flips off for its own training samples (a flipped
    image would carry the other side's label); the study's other augmentation holds."""
    spec, task, splits = _task(small_db, "imaging_technique")
    sided = build_task(spec.model_copy(update={"augment": AugmentConfig(enable_flips=False)}))
    real, seen = finetune_module.task_dataset, []

    def spy(*args: object) -> object:
        seen.append(args[3])  # the augmentation of the training samples
        return real(*args)

    monkeypatch.setattr(finetune_module, "task_dataset", spy)
    cfg = TINY.model_copy(update={"augment": AugmentConfig(intensity_jitter=0.1), "max_steps": 1})
    for each in (task, sided):
        finetune(
            load_encoder(checkpoint),
            spec.name,
            each,
            train=splits["train"][:8],
            val=splits["val"][:8],
            metric="balanced_accuracy",
            cfg=cfg,
            freeze_encoder=False,
            seed=0,
        )
    assert [(a.enable_flips, a.intensity_jitter) for a in seen] == [(True, 0.1), (False, 0.1)]


@pytest.mark.integration
def test_frozen_decoder_trains_decoder_and_head_only(checkpoint: Path, small_db: Path) -> None:
    spec, task, splits = _task(small_db, "nuclei_seg")
    encoder = load_encoder(checkpoint)
    result = finetune(
        encoder,
        spec.name,
        task,
        train=splits["train"][:10],
        val=splits["val"],
        metric="mean_dice",
        cfg=TINY,
        freeze_encoder=True,
        seed=0,
    )
    source = encoder.encoder.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in result.model.encoder.state_dict().items())
    assert not any(p.requires_grad for p in result.model.encoder.parameters())
    assert all(p.requires_grad for p in result.model.pixel_decoder.parameters())
    assert result.steps <= TINY.max_steps and result.best_step in (2, 4)
    scores = score_model(result.model, spec.name, task, records=splits["val"], image_size=32).compute()
    per_class = {f"{m}/{c}" for m in ("dice", "share") for c in ("background", "nucleus")}
    assert set(scores) == per_class | {"mean_dice"}
    assert scores["mean_dice"] == pytest.approx(result.best_score)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["imaging_technique", "nuclei_det"])
def test_finetuning_changes_the_encoder_and_keeps_the_best_step(
    checkpoint: Path, small_db: Path, name: str
) -> None:
    spec, task, splits = _task(small_db, name)
    encoder = load_encoder(checkpoint)
    metric = {"imaging_technique": "balanced_accuracy", "nuclei_det": "map_50"}[name]
    result = finetune(
        encoder,
        spec.name,
        task,
        train=splits["train"][:12],
        val=splits["val"],
        metric=metric,
        cfg=TINY,
        freeze_encoder=False,
        seed=0,
    )
    changed = [
        not torch.equal(v, encoder.encoder.state_dict()[k])
        for k, v in result.model.encoder.state_dict().items()
    ]
    assert any(changed)
    # evaluated at steps 2 and 4: the kept weights are the best evaluation's, and score as it did
    assert [step for step, _ in result.curve] == [2, 4]
    assert (result.best_step, result.best_score) == max(result.curve, key=lambda point: point[1])
    val = score_model(result.model, spec.name, task, records=splits["val"], image_size=32).compute()
    assert val[metric] == pytest.approx(result.best_score)
    assert result.model_config.encoder.name == "resnet10t"


def test_the_step_budget_grows_with_the_training_data() -> None:
    cfg = FinetuneConfig(epochs=5, min_steps=20, dense_min_steps=150, max_steps=200, batch_size=16)
    budgets = [cfg.budget_steps(n) for n in (10, 64, 320, 5000)]
    assert budgets == [20, 20, 100, 200]  # 5 passes of 20 batches; the floor and the cap
    # decoders trained from scratch (segmentation, detection) get their own floor, under the cap
    assert [cfg.budget_steps(n, dense=True) for n in (10, 320, 5000)] == [150, 150, 200]
    assert (
        cfg.eval_interval(100) == 10
        and cfg.model_copy(update={"eval_every_steps": 7}).eval_interval(100) == 7
    )


@pytest.mark.integration
def test_a_decoder_that_never_improves_is_flagged(checkpoint: Path, small_db: Path) -> None:
    spec, task, splits = _task(small_db, "nuclei_seg")
    encoder = load_encoder(checkpoint)
    frozen = TINY.model_copy(
        update={
            "optimizer": TINY.optimizer.model_copy(update={"lr": 1e-12, "head_lr": 1e-12}),
            "min_steps": 1,
        }
    )
    train_frozen = partial(
        finetune,
        encoder,
        spec.name,
        task,
        train=splits["train"][:8],
        val=splits["val"],
        metric="mean_dice",
        freeze_encoder=True,
        seed=0,
    )
    stuck = train_frozen(cfg=frozen)
    assert stuck.evaluations == 2 and stuck.best_step == 2 and stuck.never_improved
    single = train_frozen(cfg=frozen.model_copy(update={"max_steps": 2}))
    assert single.evaluations == 1 and not single.never_improved  # one evaluation cannot tell


def test_early_stopping_waits_for_a_share_of_the_budget() -> None:
    cfg = FinetuneConfig(patience_fraction=0.25, stop_after_fraction=0.5)
    # ten evaluations of a 400-step budget, the best at the first: a flat start (a decoder that
    # still predicts background everywhere) is not cut off after a handful of evaluations
    stops = [step for step in range(40, 401, 40) if cfg.should_stop(step, 40, 400)]
    assert stops[0] == 200
    # a score that still rises keeps the run going to the end of the budget
    assert not any(cfg.should_stop(step, step, 400) for step in range(40, 401, 40))
    assert cfg.should_stop(360, 240, 400) and not cfg.should_stop(320, 240, 400)


@pytest.mark.integration
def test_a_flat_start_trains_half_the_budget_before_stopping(checkpoint: Path, small_db: Path) -> None:
    spec, task, splits = _task(small_db, "nuclei_seg")
    flat = TINY.model_copy(
        update={
            "optimizer": TINY.optimizer.model_copy(update={"lr": 1e-12, "head_lr": 1e-12}),
            "max_steps": 40,
            "eval_every_steps": 2,
            "epochs": 1.0,  # a classification budget would be 1 step: the dense floor gives 40
            "min_steps": 1,
        }
    )
    result = finetune(
        load_encoder(checkpoint),
        spec.name,
        task,
        train=splits["train"][:8],
        val=splits["val"],
        metric="mean_dice",
        cfg=flat,
        freeze_encoder=True,
        seed=0,
    )
    assert result.budget_steps == 40 and result.steps == 20  # stop_after_fraction 0.5
    assert [s for s, _ in result.curve] == list(range(2, 21, 2)) and result.never_improved


@pytest.mark.integration
def test_bf16_precision_autocasts_the_training_steps_not_only_validation(
    checkpoint: Path, small_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, task, splits = _task(small_db, "imaging_technique")
    encoder = load_encoder(checkpoint)
    step_dtypes: list[torch.dtype] = []
    real_step = finetune_module.memory_constant_step

    def recording_step(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
        hooks = [
            m.register_forward_hook(lambda m, a, out: step_dtypes.append(out.dtype))
            for m in model.modules()
            if isinstance(m, torch.nn.Conv2d)
        ]
        try:
            return real_step(model, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()

    monkeypatch.setattr(finetune_module, "memory_constant_step", recording_step)
    cfg = TINY.model_copy(update={"max_steps": 2, "precision": "bf16"})
    result = finetune(
        encoder,
        spec.name,
        task,
        train=splits["train"][:8],
        val=splits["val"],
        metric="balanced_accuracy",
        cfg=cfg,
        freeze_encoder=False,
        seed=0,
    )
    assert result.steps == 2 and step_dtypes and set(step_dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_a_failing_step_still_ends_the_loader(
    checkpoint: Path, small_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[object] = []
    real_close = finetune_module.CyclicTaskLoader.close

    def close(loader: object) -> None:
        closed.append(loader)
        real_close(loader)

    def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a step failed")

    monkeypatch.setattr(finetune_module.CyclicTaskLoader, "close", close)
    monkeypatch.setattr(finetune_module, "memory_constant_step", failing)
    spec, task, splits = _task(small_db, "nuclei_seg")
    with pytest.raises(RuntimeError, match="a step failed"):
        finetune(
            load_encoder(checkpoint),
            spec.name,
            task,
            train=splits["train"][:10],
            val=splits["val"],
            metric="mean_dice",
            cfg=TINY,
            freeze_encoder=False,
            seed=0,
        )
    assert len(closed) == 1

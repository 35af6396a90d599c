from __future__ import annotations

import pytest
import torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.models.masking import MaskedImageOutput
from medfoundry.tasks import TASK_TYPES, MaskedImageTask, TaskSpec, build_task


def _spec(**fields: object) -> TaskSpec:
    fields = {"name": "u", "type": "masked_image", "source": {"path": "u.csv"}, **fields}
    return TaskSpec.model_validate(fields)


def test_registered_unlabelled_and_routed_to_the_objective() -> None:
    task = build_task(_spec())
    assert TASK_TYPES.get("masked_image") is MaskedImageTask
    assert (task.feature, task.target) == ("masked", "image")
    assert isinstance(task.build_head(64), nn.Identity)
    assert task.collate_targets([None, None]) is None
    assert task.metrics().compute() == {}


def test_loss_is_the_objectives_loss() -> None:
    loss = torch.tensor(0.97, requires_grad=True)
    output = MaskedImageOutput(loss, torch.zeros(1, 4, 768), torch.ones(1, 4))
    assert build_task(_spec()).loss(output, None) is loss


def test_classes_and_options_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"masked_image tasks are unlabelled; remove the classes \['a'\]"):
        build_task(_spec(classes=["a"]))
    with pytest.raises(ConfigError, match=r"options.mask_ratio: unknown key"):
        build_task(_spec(options={"mask_ratio": 0.5}))


@pytest.mark.parametrize("kind", ["classification", "multilabel", "segmentation", "detection"])
def test_labelled_task_types_still_need_classes(kind: str) -> None:
    with pytest.raises(ConfigError, match="needs at least"):
        build_task(TaskSpec(name="t", type=kind, source={"path": "t.csv"}))

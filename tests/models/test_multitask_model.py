from __future__ import annotations

import inspect

import pytest
import torch

from medfoundry.models import (
    DetectionDecoderConfig,
    EncoderConfig,
    ModelConfig,
    PixelDecoderConfig,
    UNetPixelDecoder,
    build_multitask_model,
    create_encoder,
)
from medfoundry.models.detection_decoder import FCOSDecoder
from medfoundry.tasks import TaskSpec, build_task


def _tasks() -> dict[str, object]:
    specs = [
        TaskSpec(name="c", type="classification", classes=["a", "b", "c"], source={"path": "c.csv"}),
        TaskSpec(name="m", type="multilabel", classes=["x", "y"], source={"path": "m.csv"}),
        TaskSpec(name="s", type="segmentation", classes=["bg", "fg"], source={"path": "s.csv"}),
        TaskSpec(name="d", type="detection", classes=["obj"], source={"path": "d.csv"}),
    ]
    return {s.name: build_task(s) for s in specs}


def _model() -> torch.nn.Module:
    cfg = ModelConfig(
        image_size=32,
        encoder=EncoderConfig(name="resnet10t"),
        pixel_decoder=PixelDecoderConfig(channels=16, embed_dim=8),
        detection_decoder=DetectionDecoderConfig(channels=16, num_convs=1, num_levels=3),
    )
    return build_multitask_model(cfg, _tasks())  # type: ignore[arg-type]


def test_each_task_gets_its_output_shape() -> None:
    model = _model()
    x = torch.rand(2, 3, 32, 32)
    assert model("c", x).shape == (2, 3)
    assert model("m", x).shape == (2, 2)
    assert model("s", x).shape == (2, 2, 32, 32)
    assert len(model("d", x).cls_logits) == 3


def test_shared_and_head_parameters_partition_the_model() -> None:
    model = _model()
    shared = {id(p) for p in model.shared_parameters()}
    heads = [{id(p) for p in model.head_parameters(t)} for t in ("c", "m", "s", "d")]
    assert all(not (shared & h) for h in heads)
    assert len(shared) + sum(len(h) for h in heads) == len(list(model.parameters()))


def test_a_classification_batch_does_not_touch_the_decoders() -> None:
    model = _model()
    model("c", torch.rand(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.pixel_decoder.parameters())
    assert all(p.grad is None for p in model.detection_decoder.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())


@pytest.mark.parametrize(
    ("config", "constructor", "supplied"),
    [
        (EncoderConfig, create_encoder, {"img_size"}),
        (PixelDecoderConfig, UNetPixelDecoder, {"in_channels", "in_strides"}),
        (DetectionDecoderConfig, FCOSDecoder, {"in_channels", "in_strides"}),
    ],
)
def test_config_fields_equal_constructor_arguments(
    config: type, constructor: object, supplied: set[str]
) -> None:
    params = inspect.signature(constructor).parameters  # type: ignore[arg-type]
    fields = config.model_fields
    assert set(fields) | supplied == set(params) - {"self"}
    for name, field in fields.items():
        if field.is_required():
            assert params[name].default is inspect.Parameter.empty, name
        else:
            default = field.default_factory() if field.default_factory else field.default
            assert default == params[name].default, name

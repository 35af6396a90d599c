from __future__ import annotations

import inspect

import pytest
import torch

from medfoundry.models import (
    DetectionDecoderConfig,
    EncoderConfig,
    MaskedImageConfig,
    MaskedImageOutput,
    ModelConfig,
    PixelDecoderConfig,
    UNetPixelDecoder,
    build_multitask_model,
    create_encoder,
    create_masked_image_objective,
)
from medfoundry.models.detection_decoder import FCOSDecoder
from medfoundry.tasks import TaskSpec, build_task


def _tasks() -> dict[str, object]:
    specs = [
        TaskSpec(name="c", type="classification", classes=["a", "b", "c"], source={"path": "c.csv"}),
        TaskSpec(name="m", type="multilabel", classes=["x", "y"], source={"path": "m.csv"}),
        TaskSpec(name="s", type="segmentation", classes=["bg", "fg"], source={"path": "s.csv"}),
        TaskSpec(name="d", type="detection", classes=["obj"], source={"path": "d.csv"}),
        TaskSpec(name="u", type="masked_image", source={"path": "u.csv"}),
    ]
    return {s.name: build_task(s) for s in specs}


def _model() -> torch.nn.Module:
    cfg = ModelConfig(
        image_size=32,
        encoder=EncoderConfig(name="resnet10t"),
        pixel_decoder=PixelDecoderConfig(channels=16, embed_dim=8),
        detection_decoder=DetectionDecoderConfig(channels=16, num_convs=1, num_levels=3),
        masked_image=MaskedImageConfig(decoder_dim=16, decoder_depth=1, decoder_num_heads=2),
    )
    return build_multitask_model(cfg, _tasks())  # type: ignore[arg-type]


def test_each_task_gets_its_output_shape() -> None:
    model = _model()
    x = torch.rand(2, 3, 32, 32)
    assert model("c", x).shape == (2, 3)
    assert model("m", x).shape == (2, 2)
    assert model("s", x).shape == (2, 2, 32, 32)
    assert len(model("d", x).cls_logits) == 3
    out = model("u", x)
    assert isinstance(out, MaskedImageOutput) and out.mask.shape == (2, 4)


def test_shared_and_head_parameters_partition_the_model() -> None:
    model = _model()
    shared = {id(p) for p in model.shared_parameters()}
    heads = [{id(p) for p in model.head_parameters(t)} for t in ("c", "m", "s", "d", "u")]
    assert all(not (shared & h) for h in heads)
    assert not heads[-1]  # the masked-image objective (mask token, decoder) is shared
    assert len(shared) + sum(len(h) for h in heads) == len(list(model.parameters()))


def test_a_classification_batch_does_not_touch_the_decoders() -> None:
    model = _model()
    model("c", torch.rand(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.pixel_decoder.parameters())
    assert all(p.grad is None for p in model.detection_decoder.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.masked_image.parameters())


def test_a_masked_image_batch_trains_encoder_and_objective_but_no_decoder() -> None:
    model = _model()
    model("u", torch.rand(2, 3, 32, 32)).loss.backward()
    assert all(p.grad is not None for p in model.encoder.backbone.parameters())
    assert all(p.grad is not None for p in model.masked_image.parameters())
    assert all(p.grad is None for p in model.pixel_decoder.parameters())


@pytest.mark.parametrize(
    ("config", "constructor", "supplied"),
    [
        (EncoderConfig, create_encoder, {"img_size", "config_key"}),
        (PixelDecoderConfig, UNetPixelDecoder, {"in_channels", "in_strides"}),
        (DetectionDecoderConfig, FCOSDecoder, {"in_channels", "in_strides"}),
        (MaskedImageConfig, create_masked_image_objective, {"encoder", "image_size"}),
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

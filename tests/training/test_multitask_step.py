"""The memory-constant step against the joint baseline, and the non-finite guard."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from medfoundry.models import (
    DetectionDecoderConfig,
    EncoderConfig,
    ModelConfig,
    PixelDecoderConfig,
    build_multitask_model,
)
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training import Optimizers, TaskBatch, joint_step, memory_constant_step
from medfoundry.training.multitask_step import SINGLE_PROCESS, StepResult, _step_shared


def _setup(
    use_groupnorm: bool = True, model_kwargs: dict[str, object] | None = None
) -> tuple[torch.nn.Module, dict[str, object], list[TaskBatch]]:
    specs = [
        TaskSpec(name="c", type="classification", classes=["a", "b", "c"], source={"path": "c.csv"}),
        TaskSpec(name="s", type="segmentation", classes=["bg", "fg"], source={"path": "s.csv"}),
        TaskSpec(name="d", type="detection", classes=["obj"], source={"path": "d.csv"}),
        TaskSpec(name="m", type="multilabel", classes=["x", "y"], source={"path": "m.csv"}),
    ]
    tasks = {s.name: build_task(s) for s in specs}
    cfg = ModelConfig(
        image_size=32,
        encoder=EncoderConfig(name="resnet10t", use_groupnorm=use_groupnorm, model_kwargs=model_kwargs),
        pixel_decoder=PixelDecoderConfig(channels=16, embed_dim=8),
        detection_decoder=DetectionDecoderConfig(channels=16, num_convs=1, num_levels=3),
    )
    torch.manual_seed(0)
    model = build_multitask_model(cfg, tasks)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    box = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 18.0]]), "labels": torch.tensor([0])}
    batches = [
        TaskBatch("c", torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 1])),
        TaskBatch("s", torch.rand(4, 3, 32, 32, generator=g), torch.randint(0, 2, (4, 32, 32), generator=g)),
        TaskBatch(
            "d",
            torch.rand(2, 3, 32, 32, generator=g),
            [box, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}],
        ),
        TaskBatch("m", torch.rand(4, 3, 32, 32, generator=g), torch.tensor([[1.0, math.nan]] * 4)),
    ]
    return model, tasks, batches


def _sgd(model: torch.nn.Module) -> Optimizers:
    # plain SGD: the update is exactly -lr * gradient, so equal updates mean equal gradients
    return Optimizers(
        shared=torch.optim.SGD(model.shared_parameters(), lr=1.0),
        heads={t: torch.optim.SGD(model.head_parameters(t), lr=1.0) for t in model.heads},
    )


def test_memory_constant_step_equals_the_joint_sum_of_losses() -> None:
    model, tasks, batches = _setup()
    other = copy.deepcopy(model)
    a = memory_constant_step(model, tasks, batches, _sgd(model))
    b = joint_step(other, tasks, batches, _sgd(other))
    assert a.shared_updated and b.shared_updated and not a.nonfinite
    assert a.losses == b.losses and set(a.losses) == {"c", "s", "d", "m"}
    for (name, p), q in zip(model.named_parameters(), other.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name
    assert all(p.grad is None for p in model.parameters())  # gradients freed with set_to_none


def test_a_non_finite_batch_is_skipped_and_never_reaches_the_shared_weights() -> None:
    model, tasks, batches = _setup()
    reference = copy.deepcopy(model)
    poisoned = [TaskBatch(b.task, b.images.clone(), b.targets) for b in batches]
    poisoned[1].images[0, 0, 0, 0] = math.nan
    result = memory_constant_step(model, tasks, poisoned, _sgd(model))
    expected = memory_constant_step(reference, tasks, [b for b in batches if b.task != "s"], _sgd(reference))
    assert result.nonfinite == ["s"] and "s" not in result.losses
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    assert expected.shared_updated


def test_a_skipped_batch_leaves_no_trace_in_batchnorm_statistics_or_optimizer_state() -> None:
    """With BatchNorm kept (use_groupnorm: false) the forward pass of a NaN batch updates the
    running statistics, and with drop-path draws random numbers, before its loss is known to be
    NaN; the step must put both back."""
    model, tasks, batches = _setup(use_groupnorm=False, model_kwargs={"drop_path_rate": 0.2})
    reference = copy.deepcopy(model)
    poisoned = [TaskBatch(b.task, b.images.clone(), b.targets) for b in batches]
    poisoned[1].images[0, 0, 0, 0] = math.nan

    def adamw(m: torch.nn.Module) -> Optimizers:
        return Optimizers(
            shared=torch.optim.AdamW(m.shared_parameters(), lr=1e-3),
            heads={t: torch.optim.AdamW(m.head_parameters(t), lr=1e-3) for t in m.heads},
        )

    optimizers, expected_optimizers = adamw(model), adamw(reference)
    torch.manual_seed(7)
    result = memory_constant_step(model, tasks, poisoned, optimizers)
    after_poisoned = torch.get_rng_state()
    torch.manual_seed(7)
    memory_constant_step(reference, tasks, [b for b in batches if b.task != "s"], expected_optimizers)
    assert result.nonfinite == ["s"] and torch.equal(after_poisoned, torch.get_rng_state())
    state, expected = model.state_dict(), reference.state_dict()
    assert any("running_mean" in key for key in state)
    for key, value in state.items():
        assert torch.isfinite(value.float()).all() and torch.equal(value, expected[key]), key
    assert optimizers.heads["s"].state_dict()["state"] == {}  # the skipped head never stepped
    shared, expected_shared = optimizers.shared.state_dict(), expected_optimizers.shared.state_dict()
    for index, moments in shared["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(tensor, expected_shared["state"][index][name]), (index, name)


def test_a_non_finite_shared_gradient_skips_the_update() -> None:
    layer = torch.nn.Linear(2, 2)
    before = layer.weight.detach().clone()
    layer(torch.ones(1, 2)).sum().backward()
    layer.weight.grad[0, 0] = math.inf  # type: ignore[index]
    norm, updated = _step_shared(
        Optimizers(torch.optim.SGD(layer.parameters(), lr=1.0), {}),
        list(layer.parameters()),
        1.0,
        SINGLE_PROCESS,
    )
    assert not updated and math.isinf(norm)
    assert torch.equal(layer.weight, before) and layer.weight.grad is None


def test_each_head_steps_right_after_its_own_backward() -> None:
    model, tasks, batches = _setup()
    seen: list[tuple[str, bool]] = []
    optimizers = _sgd(model)
    for task, optimizer in optimizers.heads.items():
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs, task=task: seen.append(
                (
                    task,
                    all(p.grad is None for t in model.heads if t != task for p in model.head_parameters(t)),
                )
            )
        )
    memory_constant_step(model, tasks, batches, optimizers)
    # heads step in batch order, and when one steps no other head holds a gradient
    assert seen == [("c", True), ("s", True), ("d", True), ("m", True)]


def _record_conv_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    return seen


def _assert_like_the_fp32_step(
    mixed: torch.nn.Module, full: torch.nn.Module, before: dict[str, torch.Tensor], *, rtol: float
) -> None:
    """The mixed-precision step moved exactly the tensors the fp32 step moved (a step that
    changes nothing fails), and the shared weights and every head by about as much."""
    moved = {n for n, p in mixed.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in full.named_parameters() if not torch.equal(p, before[n])}
    heads = [f"heads.{task}." for task in mixed.heads]  # type: ignore[union-attr]
    assert all(any(n.startswith(head) for n in moved) for head in heads)  # every head stepped
    mixed_params, full_params = dict(mixed.named_parameters()), dict(full.named_parameters())
    groups = {"shared": [n for n in before if not n.startswith("heads.")]}
    groups |= {head: [n for n in before if n.startswith(head)] for head in heads}
    for group, names in groups.items():
        update = torch.cat([(mixed_params[n] - before[n]).flatten() for n in names])
        reference = torch.cat([(full_params[n] - before[n]).flatten() for n in names])
        error = ((update - reference).norm() / reference.norm()).item()
        assert error < rtol, f"{group}: the update differs from the fp32 step's by {error:.1%}"


def _mixed_and_fp32_steps(
    device: torch.device, dtype: torch.dtype, scaler: torch.amp.GradScaler | None
) -> tuple[
    torch.nn.Module, torch.nn.Module, dict[str, torch.Tensor], list[torch.dtype], StepResult, StepResult
]:
    """One step in ``dtype`` and the same step in fp32, from the same weights and batches."""
    model, tasks, batches = _setup()
    model.to(device)
    batches = [b.to(device) for b in batches]
    reference = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = _record_conv_dtypes(model)
    optimizers = _sgd(model)
    optimizers.scaler = scaler
    mixed = memory_constant_step(model, tasks, batches, optimizers, autocast_dtype=dtype)
    full = memory_constant_step(reference, tasks, batches, _sgd(reference))
    return model, reference, before, seen, mixed, full


def test_bf16_autocast_runs_the_step_in_bfloat16_on_the_cpu() -> None:
    model, reference, before, seen, mixed, full = _mixed_and_fp32_steps(
        torch.device("cpu"), torch.bfloat16, None
    )
    assert seen and set(seen) == {torch.bfloat16}
    assert mixed.shared_updated and not mixed.nonfinite and set(mixed.losses) == set(full.losses)
    for task, loss in mixed.losses.items():  # the same step, in lower precision
        assert math.isfinite(loss) and loss != full.losses[task]
        assert loss == pytest.approx(full.losses[task], rel=0.05), task
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    _assert_like_the_fp32_step(model, reference, before, rtol=0.15)  # measured: 6 % shared, <= 2 % heads


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_autocast_with_loss_scaling_steps_like_fp32_on_the_gpu() -> None:
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8)  # SGD at lr 1: no overflow
    model, reference, before, seen, mixed, full = _mixed_and_fp32_steps(
        torch.device("cuda"), torch.float16, scaler
    )
    assert set(seen) == {torch.float16} and set(mixed.losses) == {"c", "s", "d", "m"}
    assert mixed.shared_updated and not mixed.nonfinite
    for task, loss in mixed.losses.items():
        assert loss == pytest.approx(full.losses[task], rel=0.02), task
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    # measured with fp16 autocast on a CPU: 1.4 % shared, <= 0.2 % heads
    _assert_like_the_fp32_step(model, reference, before, rtol=0.1)

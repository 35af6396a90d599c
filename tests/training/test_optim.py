from __future__ import annotations

import pytest
import torch

from medfoundry.training.optim import OptimizerConfig, build_adamw, lr_factor, set_lr


def test_warmup_then_cosine_to_the_floor() -> None:
    factors = [lr_factor(s, 100, warmup_steps=10, min_lr_ratio=0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert lr_factor(100, 100, warmup_steps=10, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    optimizer = build_adamw(model.parameters(), 1e-3, OptimizerConfig(weight_decay=0.05))
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(model[0].weight)] == 0.05
    assert decay[id(model[0].bias)] == decay[id(model[1].weight)] == 0.0


def test_a_head_without_parameters_gets_an_optimizer_that_does_nothing() -> None:
    optimizer = build_adamw([], 1e-3, OptimizerConfig())
    set_lr(optimizer, 0.5)
    optimizer.step()
    assert optimizer.param_groups[0]["lr"] == 5e-4 and not optimizer.state_dict()["state"]

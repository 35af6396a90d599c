from __future__ import annotations

import json

import torch

from medfoundry.training.state_io import flatten_state, unflatten_state


def test_optimizer_state_round_trips_through_json_and_tensors() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), betas=(0.8, 0.9))
    model(torch.rand(4, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    skeleton, tensors = flatten_state({"opt": state, "step": 7, "scaler": None})
    restored = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert restored["step"] == 7 and restored["scaler"] is None
    assert restored["opt"]["param_groups"][0]["betas"] == (0.8, 0.9)
    fresh = torch.optim.AdamW(model.parameters())
    fresh.load_state_dict(restored["opt"])
    for key in (0, 1):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state_dict()["state"][key][name], state["state"][key][name])

"""What a resumable checkpoint must hold beyond the weights, and putting it back.

Optimizer states, the fp16 loss scaler, the batches each task's stream has consumed, the step,
the best validation loss and transfer score, the non-finite streak and the RNG states. RNG states are kept per
rank: resuming with the same number of processes restores each rank's stream exactly; with a
different number, each rank is re-seeded from (seed, step, rank) and the run says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.training.checkpoint import load_model_weights, load_trainer_state
from medfoundry.training.distributed import DistributedContext
from medfoundry.training.multitask_step import Optimizers
from medfoundry.training.rng import rank_seed, rng_state, set_rng_state

__all__ = ["capture_trainer_state", "restore_trainer_state"]

log = logging.getLogger(__name__)


def capture_trainer_state(
    step: int,
    *,
    best_val_loss: float,
    best_transfer: float,
    nonfinite_streak: int,
    consumed: dict[str, int],
    optimizers: Optimizers,
    dist: DistributedContext,
    device: torch.device,
) -> dict[str, Any]:
    """The trainer state at a step boundary. A collective: every rank must call it."""
    torch_states = dist.all_gather(torch.get_rng_state())
    cuda_states = dist.all_gather(torch.cuda.get_rng_state(device)) if device.type == "cuda" else []
    return {
        "step": step,
        "best_val_loss": best_val_loss,
        "best_transfer": best_transfer,
        "nonfinite_streak": nonfinite_streak,
        "world_size": dist.world_size,
        "sampler": consumed,
        "optimizers": {
            "shared": optimizers.shared.state_dict(),
            "heads": {name: o.state_dict() for name, o in optimizers.heads.items()},
            "scaler": optimizers.scaler.state_dict() if optimizers.scaler is not None else None,
        },
        "rng": {**rng_state(), "torch_per_rank": torch_states, "cuda_per_rank": cuda_states},
    }


def restore_trainer_state(
    checkpoint: Path,
    model: nn.Module,
    optimizers: Optimizers,
    *,
    dist: DistributedContext,
    device: torch.device,
    seed: int,
) -> dict[str, Any]:
    """Load weights and trainer state from ``checkpoint`` into ``model`` and ``optimizers``.

    Returns:
        The trainer state (``step``, ``best_val_loss``, ``best_transfer`` (absent from
        checkpoints written before the transfer monitor), ``nonfinite_streak``, ``sampler``, ...).

    Raises:
        ConfigError: the checkpoint is damaged or its state does not fit this run.
    """
    load_model_weights(checkpoint, model)
    state = load_trainer_state(checkpoint)
    try:
        optimizers.shared.load_state_dict(state["optimizers"]["shared"])
        for name, optimizer in optimizers.heads.items():
            optimizer.load_state_dict(state["optimizers"]["heads"][name])
        if optimizers.scaler is not None and state["optimizers"]["scaler"] is not None:
            optimizers.scaler.load_state_dict(state["optimizers"]["scaler"])
        rng = state["rng"]
        set_rng_state(rng)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"{checkpoint}: its trainer state does not fit this run ({type(e).__name__}: {str(e)[:160]})"
        ) from None
    if state.get("world_size", 1) == dist.world_size:
        torch.set_rng_state(rng["torch_per_rank"][dist.rank])
        if device.type == "cuda" and rng["cuda_per_rank"]:
            torch.cuda.set_rng_state(rng["cuda_per_rank"][dist.rank], device)
    else:
        # data order and augmentation do not depend on the world size; only in-model
        # randomness (dropout, drop-path, masking) differs from an uninterrupted run
        torch.manual_seed(rank_seed(seed, dist.rank, state["step"]))
        if dist.is_main:
            log.warning(
                "resuming a %d-process run with %d processes: data order is unchanged, in-model "
                "randomness is re-seeded",
                state.get("world_size", 1),
                dist.world_size,
            )
    return state

"""Multi-process training on PyTorch's distributed engine (torchrun; NCCL on GPUs, gloo on CPU).

Why not ``DistributedDataParallel``: its reducer assumes that every backward of an optimizer
step touches the same parameters and that all of them step together. Here each task batch
touches a different subset (its head, maybe a decoder), each head steps right after its own
backward, and the shared parameters step once per round. So gradients are averaged by hand, at
exactly the points the loop needs them:

- a head's gradient right after that head's backward (small: one linear layer or a few convs),
  so every rank steps its copy of the head identically;
- the shared gradient once per shared step, after all task backwards of the step — the
  ``no_sync`` pattern: no communication during the per-task backwards.

Each rank also agrees with the others on whether a task's loss is finite, so a batch is skipped
on all ranks or on none and the collectives stay in step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from medfoundry.errors import ConfigError

__all__ = ["DistributedContext", "DistributedRunError", "RankZeroFilter", "init_distributed"]

BUCKET_BYTES = 32 * 2**20
T = TypeVar("T")


class DistributedRunError(RuntimeError):
    """A collective failed: another process died, or could not be reached within the timeout."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the processes of a run.

    Attributes:
        rank: Global rank (0 in a single-process run).
        world_size: Number of processes.
        local_rank: Rank on this node (selects the GPU).
        device: Where collective tensors live (a CUDA device for NCCL, the CPU for gloo).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def run_on_main(self, action: Callable[[], T]) -> T | None:
        """Run ``action`` on rank 0 only; if it raises there, every rank raises.

        Returns:
            ``action()``'s result on rank 0, ``None`` on the others.
        """
        result, failure = None, None
        if self.is_main:
            try:
                result = action()
            except BaseException as e:  # re-raised below, after telling the other ranks
                failure = e
        if self.enabled:
            flag = torch.tensor([0.0 if failure is None else 1.0], device=self.device)
            dist.broadcast(flag, src=0)
            if failure is None and flag.item():
                raise ConfigError(f"rank {self.rank}: rank 0 failed to prepare the run; see its message")
        if failure is not None:
            raise failure
        return result

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (the others pass anything)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], device=self.device, dtype=torch.int64)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def agree_finite(self, value: float) -> tuple[bool, float]:
        """Whether the loss is finite on every rank, and its mean over ranks (one all-reduce)."""
        if not self.enabled:
            return math.isfinite(value), value
        finite = math.isfinite(value)
        flags = torch.tensor(
            [0.0 if finite else 1.0, value if finite else 0.0], device=self.device, dtype=torch.float64
        )
        dist.all_reduce(flags)
        return bool(flags[0].item() == 0), float(flags[1].item()) / self.world_size

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Replace every existing gradient by its mean over ranks (bucketed all-reduce).

        All ranks must hold gradients for the same parameters, which the loop guarantees: every
        rank runs the same tasks in the same order and skips the same batches.
        """
        if not self.enabled:
            return
        bucket: list[torch.Tensor] = []
        size = 0
        for grad in (p.grad for p in params if p.grad is not None):
            nbytes = grad.numel() * grad.element_size()
            if bucket and (size + nbytes > BUCKET_BYTES or grad.dtype != bucket[0].dtype):
                self._all_reduce_mean(bucket)
                bucket, size = [], 0
            bucket.append(grad)
            size += nbytes
        if bucket:
            self._all_reduce_mean(bucket)

    def _all_reduce_mean(self, grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """``tensor`` of every rank (same shape and dtype everywhere), in rank order, on the CPU."""
        if not self.enabled:
            return [tensor.cpu()]
        local = tensor.to(self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        return [g.cpu() for g in gathered]

    @contextlib.contextmanager
    def failures_reported(self) -> Iterator[None]:
        """Turn a failed collective into one ``DistributedRunError`` line naming this rank."""
        try:
            yield
        except RuntimeError as e:
            if not self.enabled or isinstance(e, DistributedRunError):
                raise
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise DistributedRunError(
                f"rank {self.rank} of {self.world_size}: a collective operation failed, so another process "
                f"probably died or hung; stopping this one too ({type(e).__name__}: {first}). Resume with "
                "--resume RUN_DIR"
            ) from e

    def close(self) -> None:
        """Leave the process group (after a last barrier)."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def init_distributed(device: torch.device, timeout_s: float) -> DistributedContext:
    """Join the process group that torchrun (or the ``RANK``/``WORLD_SIZE`` variables) describes.

    Without those variables this is a single-process run and nothing is initialised.

    Args:
        device: The run's device: ``cuda`` selects NCCL and this process's GPU by its local
            rank; ``cpu`` selects gloo.
        timeout_s: How long rendezvous and every collective may wait for the other processes
            before failing with an error instead of hanging.

    Raises:
        ConfigError: inconsistent variables, or the other processes could not be reached in time.
    """
    if "WORLD_SIZE" not in os.environ:
        return DistributedContext(device=device)
    try:
        world_size = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"distributed: RANK, WORLD_SIZE and LOCAL_RANK must be integers ({e})") from None
    if not 0 <= rank < world_size:
        raise ConfigError(f"distributed: RANK {rank} is outside WORLD_SIZE {world_size}")
    if world_size == 1:
        return DistributedContext(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        _join(rank, world_size, "nccl" if device.type == "cuda" else "gloo", timeout_s)
    if dist.get_world_size() != world_size:
        raise ConfigError(
            f"distributed: WORLD_SIZE is {world_size} but the group has {dist.get_world_size()}"
        )
    return DistributedContext(rank, world_size, local_rank, device)


def _join(rank: int, world_size: int, backend: str, timeout_s: float) -> None:
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:  # DistStoreError / DistNetworkError are RuntimeErrors
        raise ConfigError(
            f"distributed: rank {rank} could not join the {world_size} processes at {where} within "
            f"{timeout_s:.0f} s ({type(e).__name__}: {str(e).splitlines()[0][:160]}); are all processes "
            "started with the same WORLD_SIZE, MASTER_ADDR and MASTER_PORT?"
        ) from None


class RankZeroFilter(logging.Filter):
    """Lets log records through on rank 0 only (the rank is read when filtering, not at import)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return os.environ.get("RANK", "0") == "0"

"""Device and precision selection."""

from __future__ import annotations

import torch

from medfoundry.errors import ConfigError

__all__ = ["resolve_device", "resolve_precision"]


def resolve_device(name: str, key: str = "training.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        key: What the user set, as messages name it (``training.device``, ``--device``).

    Raises:
        ConfigError: CUDA requested but not available, or an unknown device string.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}: unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: '{name}' requested but no CUDA device is available; use auto or cpu")
    return device


def resolve_precision(
    precision: str, device: torch.device, key: str = "training.precision"
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """Autocast dtype and loss scaler for ``fp32`` / ``bf16`` / ``fp16``; ``key`` is what the
    user set, as messages name it.

    Raises:
        ConfigError: fp16 on a CPU (use bf16 there).
    """
    if precision == "fp32":
        return None, None
    if precision == "bf16":
        return torch.bfloat16, None
    if device.type != "cuda":
        raise ConfigError(f"{key}: fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return torch.float16, torch.amp.GradScaler("cuda")

"""Device and precision selection."""

from __future__ import annotations

import torch

from medfoundry.errors import ConfigError

__all__ = ["resolve_device", "resolve_precision"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked.

    Raises:
        ConfigError: CUDA requested but not available, or an unknown device string.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"training.device: unknown device '{name}' (use auto, cpu, cuda or cuda:N)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"training.device: '{name}' requested but no CUDA device is available; use auto or cpu"
        )
    return device


def resolve_precision(
    precision: str, device: torch.device
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """Autocast dtype and loss scaler for ``fp32`` / ``bf16`` / ``fp16``.

    Raises:
        ConfigError: fp16 on a CPU (use bf16 there).
    """
    if precision == "fp32":
        return None, None
    if precision == "bf16":
        return torch.bfloat16, None
    if device.type != "cuda":
        raise ConfigError("training.precision: fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return torch.float16, torch.amp.GradScaler("cuda")

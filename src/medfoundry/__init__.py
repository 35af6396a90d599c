"""medfoundry: pretrain biomedical image encoders on many small datasets, and measure what they save.

Importing medfoundry is cheap: subpackages (and torch) load when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfoundry.evaluation.pretrained_encoder import load_encoder

__version__ = "0.1.0"

__all__ = ["__version__", "load_encoder"]


def __getattr__(name: str) -> Any:
    # PEP 562: ``medfoundry.load_encoder`` imports torch only when it is first used
    if name == "load_encoder":
        from medfoundry.evaluation.pretrained_encoder import load_encoder

        return load_encoder
    raise AttributeError(f"module 'medfoundry' has no attribute '{name}'")

"""medfoundry: pretrain biomedical image encoders on many small datasets, and measure what they save.

Importing medfoundry is cheap: subpackages (and torch) load when used. The public API
(``medfoundry.api``): ``pretrain(config)``, ``evaluate(study)``, ``load_task_database(path)``,
``create_task(type, classes=...)`` and ``load_encoder(source)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfoundry.api import create_task, evaluate, pretrain
    from medfoundry.evaluation.pretrained_encoder import load_encoder
    from medfoundry.tasks.database import load_task_database

__version__ = "0.1.0"

__all__ = ["__version__", "create_task", "evaluate", "load_encoder", "load_task_database", "pretrain"]

_PUBLIC = {
    "create_task": "medfoundry.api",
    "evaluate": "medfoundry.api",
    "pretrain": "medfoundry.api",
    "load_encoder": "medfoundry.evaluation.pretrained_encoder",
    "load_task_database": "medfoundry.tasks.database",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the public functions import torch only when one is first used
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'medfoundry' has no attribute '{name}'")

"""Validation of a task's ``options`` block against its task type's ``Options`` model."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from medfoundry.errors import ConfigError
from medfoundry.tasks.spec import TaskSpec

__all__ = ["parse_options"]

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(spec: TaskSpec, model: type[OptionsT]) -> OptionsT:
    """Validate ``spec.options``; errors name the task and the key.

    Raises:
        ConfigError: one line per bad key, e.g. ``task 'nuclei': options.ignore_idx: unknown key``.
    """
    try:
        return model.model_validate(spec.options)
    except ValidationError as e:
        valid = ", ".join(model.model_fields) or "none"
        raise ConfigError(
            f"task '{spec.name}': options.{'.'.join(str(p) for p in err['loc'])}: "
            f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']} (valid options: {valid})"
            for err in e.errors()
        ) from None

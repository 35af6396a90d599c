"""Reading YAML configs: ``--set key=value`` overrides and readable validation errors.

Every problem in a config is reported at once, one line each, naming the file and the dotted
key: ``configs/x.yaml: training.lrr: unknown key (valid: lr, head_lr, ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from medfoundry.errors import ConfigError

__all__ = ["apply_overrides", "load_yaml", "validate_config"]

ModelT = TypeVar("ModelT", bound=BaseModel)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file.

    Raises:
        ConfigError: the file is missing or is not valid YAML (with the line and column).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML; list items by index: ``tasks.0.x``).

    Examples:
        >>> apply_overrides({"training": {"epochs": 1}}, ["training.epochs=3", "seed=7"])
        {'training': {'epochs': 3}, 'seed': 7}
    """
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected key=value, e.g. training.epochs=3")
            continue
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        node: Any = raw
        parts = key.split(".")
        try:
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
            if isinstance(node, list):
                node[int(parts[-1])] = value
            elif isinstance(node, dict):
                node[parts[-1]] = value
            else:
                raise TypeError
        except (ValueError, IndexError, TypeError, AttributeError):
            problems.append(f"--set {item!r}: '{key}' does not name a settable key in the config")
    if problems:
        raise ConfigError(problems)
    return raw


def validate_config(model: type[ModelT], raw: Any, source: str) -> ModelT:
    """Validate ``raw`` against ``model``; all problems in one ``ConfigError``.

    Args:
        model: The pydantic model of the config.
        raw: Parsed YAML.
        source: Where it came from (file name), for messages.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(model, err, source) for err in e.errors()) from None


def _describe(model: type[BaseModel], err: Any, source: str) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(model, err["loc"][:-1])
        hint = f" (valid: {', '.join(valid)})" if valid else ""
        return f"{source}: {key}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    return f"{source}: {key}: {err['msg']} (got {_short(err.get('input'))})"


def _valid_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names of the (nested) model at ``loc``, or [] when it cannot be followed."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

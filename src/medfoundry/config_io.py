"""Reading YAML configs: ``--set key=value`` overrides, relative paths and readable errors.

One rule for relative paths: a path written inside a YAML file is relative to that file; a path
given on the command line (``--set key=path``, ``--out``, positional paths) is relative to the
current folder, as in every other command-line tool. ``resolve_relative_paths`` and the
``is_path`` argument of ``apply_overrides`` apply it.

Every problem in a config is reported at once, one line each, naming the file and the dotted
key: ``configs/x.yaml: training.lrr: unknown key (valid: lr, head_lr, ...)``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from medfoundry.errors import ConfigError

__all__ = ["IsPath", "apply_overrides", "load_yaml", "path_keys", "resolve_relative_paths", "validate_config"]

ModelT = TypeVar("ModelT", bound=BaseModel)
IsPath = Callable[[str, Any], bool]
"""Whether the value at a dotted key (``encoders.0.source``) is a path."""


def path_keys(*patterns: str, where: Callable[[Any], bool] = lambda value: True) -> IsPath:
    """An ``IsPath`` for dotted keys matching any of ``patterns`` (``*``: any key or index).

    Examples:
        >>> is_path = path_keys("run_dir", "encoders.*.source")
        >>> is_path("encoders.0.source", "ckpt/best"), is_path("seed", 3)
        (True, False)
    """
    return lambda key, value: where(value) and any(fnmatch.fnmatchcase(key, p) for p in patterns)


def resolve_relative_paths(raw: Any, *, is_path: IsPath, base: Path, key: str = "") -> Any:
    """Make every relative path string in ``raw`` (where ``is_path`` says so) absolute against
    ``base``, in place; returns ``raw``. Links are not followed (an output folder that is a link
    is refused later, by name).

    Examples:
        >>> resolve_relative_paths({"run_dir": "runs/x"}, is_path=path_keys("run_dir"), base=Path("/cfg"))
        {'run_dir': '/cfg/runs/x'}
    """
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for name, value in list(items):
        dotted = f"{key}.{name}" if key else str(name)
        if isinstance(value, str) and is_path(dotted, value):
            raw[name] = _absolute(value, base)
        else:
            resolve_relative_paths(value, is_path=is_path, base=base, key=dotted)
    return raw


def _absolute(value: str, base: Path) -> str:
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else os.path.abspath(os.path.join(base, expanded))


def load_yaml(path: Path) -> Any:
    """Parse a YAML file.

    Raises:
        ConfigError: the file is missing, not UTF-8 text, or not valid YAML (with the line and
            column).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start : e.end]!r})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None


def apply_overrides(
    raw: dict[str, Any], overrides: Sequence[str], *, is_path: IsPath | None = None
) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML; list items by index: ``tasks.0.x``).

    A relative path given on the command line (where ``is_path`` says the key holds one) is
    made absolute against the current folder, so that the file's folder does not apply to it.

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
        if is_path is not None and isinstance(value, str) and is_path(key, value):
            value = _absolute(value, Path.cwd())
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
    shown, valid = _follow(model, err["loc"])
    key = ".".join(shown) or "(top level)"
    if err["type"] == "extra_forbidden":
        hint = f" (valid: {', '.join(valid)})" if valid else ""
        return f"{source}: {key}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    return f"{source}: {key}: {err['msg']} (got {_short(err.get('input'))})"


def _follow(model: type[BaseModel], loc: Sequence[Any]) -> tuple[list[str], list[str]]:
    """The key path as written in the file, and the valid keys of the mapping holding its last key.

    pydantic puts the member of a union in the path (its ``type`` tag or class name); those are
    not keys of the file, so they are left out, and they say which model's keys are valid.
    """
    shown: list[str] = []
    current: list[type[BaseModel]] = [model]
    valid: list[str] = []
    for part in loc:
        if isinstance(part, int):
            shown.append(str(part))
            continue
        members = [m for m in current if part == m.__name__ or (part == _tag(m) and len(current) > 1)]
        if members:
            current = members
            continue
        valid = list(current[0].model_fields) if len(current) == 1 else []
        shown.append(str(part))
        fields = [m.model_fields[part] for m in current if part in m.model_fields]
        current = _models_in(fields[0].annotation) if fields else []
    return shown, valid


def _tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("type")
    if field is None:
        return None
    return field.default if isinstance(field.default, str) else next(iter(get_args(field.annotation)), None)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Nested training state <-> (flat tensors for safetensors, JSON skeleton). No pickle.

Optimizer states, RNG states and the like are nested dicts and lists of tensors and plain
values. ``flatten_state`` moves every tensor into a flat ``{key: tensor}`` dict (saved with
safetensors) and leaves ``{"__tensor__": key}`` markers in a JSON-serialisable skeleton;
``unflatten_state`` puts them back.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["flatten_state", "unflatten_state"]

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INT_KEYS = "__int_keys__"


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``state`` into a JSON skeleton and its tensors.

    Examples:
        >>> skeleton, tensors = flatten_state({"step": 3, "m": [torch.zeros(2)]})
        >>> skeleton
        {'step': 3, 'm': [{'__tensor__': 'm.0'}]}
        >>> list(tensors)
        ['m.0']
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().cpu().contiguous()
            return {_TENSOR: path}
        if isinstance(obj, dict):
            if obj and all(isinstance(k, int) for k in obj):  # optimizer state is keyed by param index
                return {_INT_KEYS: {str(k): walk(v, _join(path, str(k))) for k, v in obj.items()}}
            if not all(isinstance(k, str) for k in obj):
                raise TypeError(f"state keys at '{path}' must be all str or all int")
            return {k: walk(v, _join(path, k)) for k, v in obj.items()}
        if isinstance(obj, tuple):
            return {_TUPLE: [walk(v, _join(path, str(i))) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [walk(v, _join(path, str(i))) for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        raise TypeError(f"cannot store {type(obj).__name__} at '{path}' without pickle")

    return walk(state, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten_state``."""
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if _TUPLE in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton[_TUPLE])
        if _INT_KEYS in skeleton:
            return {int(k): unflatten_state(v, tensors) for k, v in skeleton[_INT_KEYS].items()}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

"""Small named registries (task types).

The only module-level mutable state in medfoundry. Entries register themselves when their
module is imported; the package ``__init__`` imports those modules.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from medfoundry.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A name -> object mapping with helpful errors.

    Args:
        kind: What the entries are, used in messages (e.g. ``"task type"``).

    Examples:
        >>> losses: Registry[int] = Registry("loss")
        >>> _ = losses.register("dice")(1)
        >>> losses.get("dice")
        1
        >>> losses.names()
        ['dice']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds an entry; registering a name twice is an error."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> T:
        """Remove an entry and return it (a test or plugin that registered it cleans up)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """Return the entry, or raise ``ConfigError`` naming the nearest valid names."""
        if name not in self._entries:
            raise ConfigError(unknown_name_message(self.kind, name, self.names()))
        return self._entries[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def unknown_name_message(kind: str, name: str, valid: list[str], *, max_listed: int = 20) -> str:
    """``unknown <kind> 'x'; did you mean 'y'? valid: a, b, c`` (long lists are cut)."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(valid[:max_listed]) + (
        f", ... ({len(valid)} in all)" if len(valid) > max_listed else ""
    )
    return f"unknown {kind} '{name}'{hint} (valid: {listed})"

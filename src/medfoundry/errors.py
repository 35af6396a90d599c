"""User-facing errors.

Every check of user input raises one of these, never ``assert``. A message states what was
found, what was expected, where (file, key, row, task) and how to fix it. The CLI prints the
message without a traceback and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError", "DataError", "MedfoundryError"]


class MedfoundryError(ValueError):
    """Base class: bad input that the user can fix.

    Args:
        problems: One message, or several that are reported together (one per line).
    """

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(MedfoundryError):
    """A configuration file, key or value is wrong."""


class DataError(MedfoundryError):
    """A data file, row or sample is wrong."""

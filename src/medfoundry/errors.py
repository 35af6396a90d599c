"""User-facing errors.

Every check of user input raises one of these, never ``assert``. A message states what was
found, what was expected, where (file, key, row, task) and how to fix it. The CLI prints the
message without a traceback and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError", "DataError", "MedfoundryError", "merge_subjects", "number_ranges"]

SHOWN_SUBJECTS = 3


class MedfoundryError(ValueError):
    """Base class: bad input that the user can fix.

    Args:
        problems: One message, or several that are reported together (one per line).
    """

    def __init__(self, problems: str | Iterable[str]) -> None:
        # the same line twice says nothing new (e.g. one bad file met through several samples)
        self.problems = [problems] if isinstance(problems, str) else list(dict.fromkeys(problems))
        super().__init__("\n".join(self.problems))


class ConfigError(MedfoundryError):
    """A configuration file, key or value is wrong."""


class DataError(MedfoundryError):
    """A data file, row or sample is wrong."""


def number_ranges(values: Iterable[int]) -> str:
    """Row or slice numbers for a message: ``[3, 4, 5, 9]`` -> ``3-5, 9``.

    Examples:
        >>> number_ranges([9, 3, 4, 5])
        '3-5, 9'
    """
    runs: list[list[int]] = []
    for value in sorted(set(values)):
        if runs and runs[-1][1] == value - 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def merge_subjects(lines: Iterable[str]) -> list[str]:
    """One line per problem: ``subject: problem`` lines with the same problem become one line
    naming the first subjects and how many more (a folder of masks saved as 0/255 is one
    problem, not one line per file).

    Examples:
        >>> merge_subjects(["a.png: bad", "b.png: bad", "c.png: worse"])
        ['a.png, b.png: bad', 'c.png: worse']
    """
    subjects: dict[str, list[str]] = {}
    for line in lines:
        subject, sep, problem = line.partition(": ")
        if sep:
            subjects.setdefault(problem, []).append(subject)
        else:
            subjects.setdefault(line, [])
    merged = []
    for problem, names in subjects.items():
        names = list(dict.fromkeys(names))
        if not names:
            merged.append(problem)
            continue
        more = len(names) - SHOWN_SUBJECTS
        shown = ", ".join(names[:SHOWN_SUBJECTS]) + (f" and {more} more" if more > 0 else "")
        merged.append(f"{shown}: {problem}")
    return merged

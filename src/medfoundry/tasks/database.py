"""Task databases: the YAML files that list tasks, read into checked task specs.

A task database is a YAML list of task specs, or a mapping whose ``tasks`` key holds one (the
form ``medfoundry demo-data`` and ``medfoundry corpus`` write). Relative source paths are
resolved against the file that lists them; which fields are paths is read from each source
type's model (``SourceBase.path_fields``), so a new source type needs nothing here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medfoundry.config_io import load_yaml, validate_config
from medfoundry.data.sources import SOURCE_TYPES
from medfoundry.errors import ConfigError
from medfoundry.tasks.spec import DatabaseTask, TaskSpec, check_unique_names

__all__ = ["is_source_path", "load_task_database", "read_tasks"]


class _TaskDatabase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[DatabaseTask] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_task_names(self) -> _TaskDatabase:
        check_unique_names(self.tasks)
        return self


def load_task_database(path: str | Path) -> list[TaskSpec]:
    r"""Read and check a task database (every spec, source type and option; no data is read).

    Args:
        path: A ``tasks.yaml`` file.

    Returns:
        The task specs, with absolute source paths.

    Raises:
        ConfigError: a missing or malformed file, or bad specs (every problem, one line each).

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "tasks.yaml").write_text(
        ...     "tasks:\n"
        ...     "- {name: organ, type: classification, classes: [liver, kidney], source: {path: organ.csv}}\n"
        ... )
        >>> (task,) = load_task_database(folder / "tasks.yaml")
        >>> task.name, task.source.path == (folder / "organ.csv").resolve()
        ('organ', True)
    """
    path = Path(path)
    tasks = read_tasks(str(path.resolve()), path)
    return list(validate_config(_TaskDatabase, {"tasks": tasks}, str(path)).tasks)


def read_tasks(tasks: Any, path: Path) -> Any:
    """A config's ``tasks`` value: a list of task specs, or the path of a task database file
    (holding that list, or a mapping with a ``tasks`` list). Relative source paths are made
    absolute against the file that holds them; other values are left for validation to report.

    Raises:
        ConfigError: the task database file is missing, not YAML or not a list of tasks.
    """
    if isinstance(tasks, str):
        tasks_file = Path(tasks) if Path(tasks).is_absolute() else path.parent / tasks
        listed = load_yaml(tasks_file)
        listed = listed.get("tasks") if isinstance(listed, dict) else listed
        if not isinstance(listed, list):
            raise ConfigError(f"{tasks_file}: expected a list of tasks (or a mapping with a 'tasks' list)")
        return _resolve_sources(listed, tasks_file.parent)
    return _resolve_sources(tasks, path.parent) if isinstance(tasks, list) else tasks


def is_source_path(key: str, value: object) -> bool:
    """Whether a dotted config key names a path field of a task's source
    (``tasks.0.source.path``; ``--set`` overrides of it are relative to the current folder)."""
    parts = key.split(".")
    if len(parts) != 4 or parts[0] != "tasks" or parts[2] != "source" or not isinstance(value, str):
        return False
    return any(parts[3] in source_type.path_fields() for source_type in SOURCE_TYPES.values())


def _resolve_sources(tasks: list[Any], base: Path) -> list[Any]:
    for task in tasks:
        source = task.get("source") if isinstance(task, dict) else None
        source_type = SOURCE_TYPES.get(source.get("type", "manifest")) if isinstance(source, dict) else None
        if isinstance(source, dict) and source_type is not None:  # an unknown type: validation reports it
            for key in source_type.path_fields():
                if isinstance(source.get(key), str) and not Path(source[key]).is_absolute():
                    source[key] = str((base / source[key]).resolve())
    return tasks

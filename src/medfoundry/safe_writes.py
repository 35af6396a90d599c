"""Writing run folders and caches: never through a symbolic link, never half a file.

A run folder handed to ``--resume`` may come from elsewhere (a colleague, an archive). A link
planted inside it (``metrics.jsonl.tmp -> ~/.bashrc``) would make an ordinary write overwrite
the file it points to. So:

- ``refuse_links`` checks a folder that is about to be written to: no entry below it may be a
  symbolic link. The folder itself, and the folders above it, may be links (``runs ->
  /scratch/runs`` is a common set-up): that is the user's own choice of where to write;
- every write goes through one of three writers: ``write_file_atomically`` (text or bytes),
  ``write_file_with`` (a writer function: npz, CSV, parquet) and ``write_folder_atomically``
  (checkpoints, exports). Each fills a temporary sibling named by ``temporary_name``
  (``.name.tmp-HOST-PID``, the one temporary-name scheme) and renames it into place, so readers
  never see half a file; files are opened with ``O_NOFOLLOW`` and ``O_EXCL``, so a link that
  appears after the check is refused too; ``open_for_append`` refuses links the same way;
- ``remove_orphans`` deletes the temporary files and folders of processes of this host that are
  gone, by ``process_alive``, the one liveness check (claims of study workers use it too);
- ``check_creatable`` tells, before anything is written, whether a folder can be created
  (its nearest existing parent is a writable folder), so that a run that cannot write its
  outputs fails before it caches or trains.

Every problem is a ``ConfigError`` naming the path.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from medfoundry.errors import ConfigError

__all__ = [
    "check_creatable",
    "make_folder",
    "missing_folders",
    "open_for_append",
    "process_alive",
    "refuse_links",
    "remove_empty_folders",
    "remove_orphans",
    "temporary_name",
    "write_file_atomically",
    "write_file_with",
    "write_folder_atomically",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def refuse_links(folder: Path, what: str) -> None:
    """Raise if any entry below ``folder`` is a symbolic link (``folder`` itself may be one).

    Args:
        folder: A run folder, checkpoint or cache folder; nothing happens if it does not exist.
        what: What the folder is, for the message (``run folder``, ``cache``).

    Raises:
        ConfigError: naming the first link found and where it points.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            entry = Path(root) / name
            if entry.is_symlink():
                raise ConfigError(
                    f"{entry}: a symbolic link inside the {what} {folder} (pointing to "
                    f"{os.readlink(entry)}); medfoundry never writes through links there: remove it"
                )


def check_creatable(folder: Path, what: str) -> None:
    """Raise unless ``folder`` exists as a writable folder or can be created, without creating it.

    Raises:
        ConfigError: a path component is a file, or the nearest existing parent is not writable.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder}: exists and is not a folder")
    existing = folder
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise ConfigError(f"{what} {folder}: {existing} is a link to a missing folder")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {folder}: cannot be created, {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {folder}: cannot be created or written, {existing} is not writable")


def make_folder(folder: Path, what: str) -> Path:
    """``mkdir -p`` with the failure as one line.

    Raises:
        ConfigError: the folder cannot be created (naming it and the reason).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {folder}: cannot be created ({e.strerror or e})") from None
    return folder


def missing_folders(folder: Path) -> list[Path]:
    """The folders ``make_folder(folder)`` would create, deepest first."""
    folder = Path(folder)
    return [p for p in (folder, *folder.parents) if not p.exists() and not p.is_symlink()]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty: what a failed call created."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another process wrote there meanwhile), or already gone
            return


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` that names this host and process (``.name.tmp-host-pid``),
    so that ``remove_orphans`` can tell the leftovers of killed processes from live ones."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{_host()}-{os.getpid()}")


def remove_orphans(folder: Path) -> list[Path]:
    """Delete temporary files and folders in ``folder`` left by processes of this host that are
    gone (killed while writing). Those of live processes, and of other hosts, are kept.

    Returns:
        What was removed.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return removed
    marker = f"-{_host()}-"
    for entry in folder.iterdir():
        name = entry.name
        tmp_at = name.rfind(".tmp-")
        if tmp_at < 0 or marker not in name[tmp_at:]:
            continue
        pid_text = name[tmp_at:].rsplit("-", 1)[-1]
        if not pid_text.isdigit() or process_alive(int(pid_text)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def write_file_atomically(path: Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8) to a new temporary file (never through a link) and rename
    it over ``path``, so that readers never see half a file.

    Raises:
        ConfigError: ``path`` cannot be written (e.g. no permission).
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    return write_file_with(path, lambda f: f.write(data))


def write_file_with(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(f)`` on a new temporary file (binary; never through a link), then rename it
    over ``path``: readers never see half a file, and a failed ``write`` leaves nothing.

    Raises:
        ConfigError: ``path`` cannot be written (e.g. no permission, disk full).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with _open_new(tmp) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a link at ``path`` itself, never its target
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ConfigError(f"{path}: cannot be written ({e.strerror or e})") from None
        raise
    return path


def write_folder_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_folder)``, then swap ``tmp_folder`` into ``path``.

    A crash before the swap leaves the old folder untouched (and a temporary folder that the
    next write, or ``remove_orphans``, deletes); a crash between the two renames leaves it as
    ``.<name>.old``, which the checkpoint loaders pick up. Nothing is written through a symbolic
    link.

    Raises:
        ConfigError: the folder cannot be written (a link in the way, no permission).
    """
    path = Path(path)
    tmp = temporary_name(path)
    old = path.parent / f".{path.name}.old"
    created = missing_folders(path.parent)
    make_folder(path.parent, "output folder")
    remove_orphans(path.parent)
    try:
        _remove(tmp)
        tmp.mkdir()
        write(tmp)
        refuse_links(tmp, "new folder")
        for file in tmp.iterdir():
            _fsync(file)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed write leaves nothing behind,
        remove_empty_folders(created)  # not even the folders made for it
        if isinstance(e, OSError):
            raise ConfigError(f"{path}: cannot be written ({e.strerror or e})") from None
        raise
    if path.is_symlink():
        raise ConfigError(f"{path}: is a symbolic link; medfoundry does not write through links")
    if path.exists():
        _remove(old)
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync(path.parent)
    _remove(old)
    return path


def open_for_append(path: Path) -> IO[str]:
    """Open a text file for appending, refusing a symbolic link at ``path``.

    Raises:
        ConfigError: ``path`` is a link or cannot be opened.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
    except OSError as e:
        reason = "it is a symbolic link" if e.errno == errno.ELOOP else (e.strerror or str(e))
        raise ConfigError(f"{path}: cannot be written ({reason})") from None
    return os.fdopen(fd, "a", encoding="utf-8")


@contextmanager
def _open_new(path: Path) -> Iterator[IO[bytes]]:
    path.unlink(missing_ok=True)  # a stale temporary file, or a link: removes the link itself
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        yield f


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (this process does; a zombie does not)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS): os.kill said it exists
        return True
    return state != "Z"


def _remove(path: Path) -> None:
    """Delete a file, a link (not what it points to) or a folder tree."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

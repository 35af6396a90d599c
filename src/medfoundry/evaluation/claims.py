"""Atomic claims on shared work, so several workers (processes, SLURM array jobs, nodes on a shared
file system) can run one study without running a cell twice or losing one.

A claim is a file ``<folder>/<name>.claim`` created with ``O_CREAT | O_EXCL``, which exactly one
process can do; it holds the owner's host, pid, a random token and the time. While a worker
holds claims, a background thread touches them every ``heartbeat_s``. A claim is *stale*, and
another worker may take it over, when its owner is gone: a process of this host that no longer
runs (a killed worker is noticed at once), or a claim not touched for ``timeout_s`` (a worker on
another node that died; keep ``timeout_s`` well above the heartbeat and any clock skew between
nodes). Taking over is itself exclusive: a ``<name>.takeover`` file created with ``O_EXCL``
guards the check-and-replace, and the new claim replaces the old one with an atomic rename.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

from medfoundry.heartbeat import Heartbeat
from medfoundry.safe_writes import process_alive, write_file_atomically

__all__ = ["ClaimBoard"]

log = logging.getLogger(__name__)


class ClaimBoard:
    """The claims of one worker on a shared folder.

    Args:
        folder: Where claims live (shared by every worker of the study).
        timeout_s: A claim untouched this long is stale.
        heartbeat_s: How often held claims are touched; default ``timeout_s / 10``.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d, ClaimBoard(Path(d)) as board:
        ...     first, second = board.try_claim("cell-1"), ClaimBoard(Path(d)).try_claim("cell-1")
        ...     board.release("cell-1")
        >>> first, second
        (True, False)
    """

    def __init__(self, folder: Path, timeout_s: float = 120.0, heartbeat_s: float | None = None) -> None:
        self.folder = Path(folder)
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else timeout_s / 10
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._held: dict[str, str] = {}  # name -> token
        self._lock = threading.Lock()
        self._heartbeat = Heartbeat(self.heartbeat_s, self._touch_held, name="claim-heartbeat")

    def __enter__(self) -> ClaimBoard:
        self._heartbeat.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._heartbeat.__exit__(exc_type, exc, tb)
        for name in list(self._held):
            self.release(name)

    def try_claim(self, name: str) -> bool:
        """Claim ``name`` if nobody holds it (or its holder is gone); ``False`` if it is taken."""
        path = self._path(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return self._take_over(name, token)
        with os.fdopen(fd, "w") as f:
            f.write(self._content(token))
        with self._lock:
            self._held[name] = token
        return True

    def release(self, name: str) -> None:
        """Give up a claim of this worker (a claim taken over by another is left alone)."""
        with self._lock:
            token = self._held.pop(name, None)
        info = _read(self._path(name))
        if token is not None and info is not None and info.get("token") == token:
            self._path(name).unlink(missing_ok=True)

    def is_live(self, name: str) -> bool:
        """Whether someone holds ``name`` (not stale)."""
        info = _read(self._path(name))
        return info is not None and not self._is_stale(self._path(name), info)

    def live_claims(self) -> list[str]:
        """Names of the claims held by live workers (this one included)."""
        if not self.folder.is_dir():
            return []
        return [p.stem for p in sorted(self.folder.glob("*.claim")) if self.is_live(p.stem)]

    def _take_over(self, name: str, token: str) -> bool:
        path = self._path(name)
        info = _read(path)
        if info is None and path.exists() and time.time() - _mtime(path) > self.timeout_s:
            info = {}  # its writer died between creating and filling it
        if info is None or not self._is_stale(path, info):
            return False  # held (or being written or replaced right now): try again later
        guard = path.with_suffix(".takeover")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            if time.time() - _mtime(guard) > self.timeout_s:  # a worker died inside a take-over
                guard.unlink(missing_ok=True)
            return False
        try:
            again = _read(path)
            if again is not None and again != info:
                return False  # someone else took it over between our two reads
            write_file_atomically(path, self._content(token))
        finally:
            guard.unlink(missing_ok=True)
        log.info(
            "took over the claim on %s from %s (pid %s), which is gone",
            name,
            info.get("host"),
            info.get("pid"),
        )
        with self._lock:
            self._held[name] = token
        return True

    def _is_stale(self, path: Path, info: dict[str, object]) -> bool:
        if info.get("host") == self.host and info.get("pid") != self.pid and not _running(info.get("pid")):
            return True
        return time.time() - _mtime(path) > self.timeout_s

    def _touch_held(self) -> None:
        with self._lock:
            held = dict(self._held)
        for name, token in held.items():
            path = self._path(name)
            info = _read(path)
            if info is None or info.get("token") != token:
                log.warning("lost the claim on %s to another worker (no heartbeat for too long?)", name)
                continue
            try:
                os.utime(path)
            except FileNotFoundError:
                pass

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.claim"

    def _content(self, token: str) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "token": token, "time": time.time()})


def _read(path: Path) -> dict[str, object] | None:
    try:
        info = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # gone, or being written this instant
        return None
    return info if isinstance(info, dict) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _running(pid: object) -> bool:
    """Whether a process ``pid`` of this host runs (``safe_writes.process_alive``)."""
    return isinstance(pid, int) and process_alive(pid)

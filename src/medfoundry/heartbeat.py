"""A background thread that calls a function every ``interval_s`` while a block runs.

Used where something must happen on time even while the main thread is busy for minutes: a
progress line in a log (``training.progress``), touching a worker's claims so that other
workers know it is alive (``evaluation.claims``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["Heartbeat"]


class Heartbeat:
    """``with Heartbeat(30, beat):`` calls ``beat()`` every 30 s in a daemon thread until the block ends.

    Args:
        interval_s: Seconds between calls (the first comes one interval after the start).
        beat: What to call; it runs in the thread, so it must be thread-safe.
        name: Name of the thread.

    Examples:
        >>> import time
        >>> calls = []
        >>> with Heartbeat(0.01, lambda: calls.append(1)):
        ...     time.sleep(0.05)
        >>> len(calls) >= 2
        True
    """

    def __init__(self, interval_s: float, beat: Callable[[], None], name: str = "heartbeat") -> None:
        self.interval_s = interval_s
        self.beat = beat
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

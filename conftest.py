"""Settings for everything pytest collects: the tests and the docstring examples in ``src/``.

Runs use one intra-op thread (tests run on 2 cores next to worker processes; one thread keeps
timings steady and CPU results bit-for-bit repeatable across processes), and the preprocessing
cache goes to a temporary folder, never the user's ``~/.cache`` (commands run as subprocesses
inherit the variable).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands run in-process install a log handler (a rich console on stdout) on the
    ``medfoundry`` logger; it is taken off again after each test, so that later tests and the
    docstring examples do not print log lines."""
    loggers = [logging.getLogger(), logging.getLogger("medfoundry")]
    saved = [(list(logger.handlers), logger.level) for logger in loggers]
    yield
    for logger, (handlers, level) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)

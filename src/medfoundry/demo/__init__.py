"""The built-in demo: a multi-task database from real images that ship inside packages."""

from __future__ import annotations

from medfoundry.demo.database import build_demo_database, write_demo_data

__all__ = ["build_demo_database", "write_demo_data"]

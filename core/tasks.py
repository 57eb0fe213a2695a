"""core's periodic task: the database's commit counter, sampled into the portal's usage (core.usage)."""

from __future__ import annotations

from core import usage


def record_database_commits() -> None:
    """Every 5 minutes: add the commits since the last sample (PostgreSQL; nothing on SQLite)."""
    usage.record_database_commits()

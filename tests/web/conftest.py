"""The web tests share tests/conftest.py's estate: ``owner``'s application ``app`` and
``other_owner``'s ``other_app`` (``mine``, ``theirs``), and its signed-in clients."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_throttle(fresh_cache):
    """Sign-in failures are counted in the cache, which outlives a test."""

"""Fixtures of the fault tests: a dropping proxy in front of the live server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.proxy import DroppingProxy


@pytest.fixture
def proxy(live_server) -> Iterator[DroppingProxy]:
    proxy = DroppingProxy(live_server.url)
    proxy.pass_()
    try:
        yield proxy
    finally:
        proxy.stop()

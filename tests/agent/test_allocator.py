"""The agent's allocator setting: applied on glibc, harmless where it cannot be."""

from __future__ import annotations

import platform

import pytest

from backup_agent import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_keeps_freed_memory_for_the_next_file():
    assert memory.keep_freed_memory() is True


def test_without_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: "/no/such/libc.so")

    assert memory.keep_freed_memory() is False

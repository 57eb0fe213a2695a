"""The allocator setting the agent runs with (glibc only; elsewhere nothing changes)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2
#: Free memory at the top of the heap that glibc keeps instead of handing it back at once,
#: and how much more it asks the kernel for each time the heap grows.
TRIM_THRESHOLD = 256 << 20
TOP_PAD = 16 << 20


def keep_freed_memory() -> bool:
    """Ask glibc to keep up to TRIM_THRESHOLD of freed heap rather than return it at once.

    A files backup frees about as much as it allocates for every file. With glibc's
    default (return anything over 128 KiB at the top of the heap), a million files
    cost some 15 million page faults, a third of the backup's time spent in the
    kernel (docs/performance.md). True when the setting was applied.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) and libc.mallopt(_M_TOP_PAD, TOP_PAD))
    except (OSError, AttributeError) as exc:  # not glibc: its own defaults stay
        log.debug("mallopt is not available here: %s", exc)
        return False

"""Small filesystem helpers shared by the config, the spool, the storage writer, the sweep and restores."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a rename or create in `path` durable: without this a power cut can undo it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never half.

    The temporary file is created with O_EXCL and its final mode, so secrets in
    it are never on disk under a more permissive mode, not even for a moment.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_tree(top: Path) -> None:
    """rmtree that also copes with read-only directories restored inside `top`; never raises."""

    def make_writable(func: Any, failed: str, exc_info: Any) -> None:
        parent = os.path.dirname(failed)
        # Only directories inside `top`, checked with lstat: never chmod through a symlink.
        try:
            if parent.startswith(str(top)) and stat.S_ISDIR(os.lstat(parent).st_mode):
                os.chmod(parent, stat.S_IRWXU)
                if stat.S_ISDIR(os.lstat(failed).st_mode):
                    os.chmod(failed, stat.S_IRWXU)
                    shutil.rmtree(failed, onerror=make_writable)
                else:
                    os.unlink(failed)
        except OSError:
            pass

    try:
        shutil.rmtree(top, onerror=make_writable)
    except OSError as exc:
        log.warning("could not remove %s: %s", top, exc)

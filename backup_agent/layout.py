"""Where the agent lives on a server: the paths the installers use, and whether systemd runs here.

One place for install.sh's layout (agent_dist/install.sh.in, which spells the same paths in shell),
the Debian package's (agent_dist/build.py), and the commands that upgrade or remove them
(backup_agent/upgrade.py, backup_agent/uninstall.py). Standard library only: agent_dist/build.py
imports it on a build machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "backup-agent.service"
PYZ_NAME = "backup-agent.pyz"
# install.sh: the zipapp under /usr/local/lib, a relative link to it in /usr/local/bin.
LOCAL_BIN = "/usr/local/bin/backup-agent"
LOCAL_LIB = "/usr/local/lib/backup-agent"
LOCAL_LINK_TARGET = f"../lib/backup-agent/{PYZ_NAME}"
CONFIG_DIR = "/etc/backup-agent"
STATE_DIR = "/var/lib/backup-agent"
LOCAL_UNIT = f"/etc/systemd/system/{UNIT_NAME}"
# The Debian package: the zipapp under /usr/lib, /usr/bin's link, and dpkg's list of the package's files.
DEB_BIN = "/usr/bin/backup-agent"
DEB_PYZ = f"/usr/lib/backup-agent/{PYZ_NAME}"
DPKG_LIST = "/var/lib/dpkg/info/backup-agent.list"

# As install.sh: BACKUP_AGENT_PREFIX (a root other than /), BACKUP_AGENT_NO_SYSTEMD=1 calls no
# systemctl; BACKUP_AGENT_SYSTEMD_RUN_DIR replaces /run/systemd/system, the sign that systemd is
# running (tests, containers).
PREFIX_ENV = "BACKUP_AGENT_PREFIX"
NO_SYSTEMD_ENV = "BACKUP_AGENT_NO_SYSTEMD"
SYSTEMD_RUN_DIR_ENV = "BACKUP_AGENT_SYSTEMD_RUN_DIR"
SYSTEMD_RUN_DIR = "/run/systemd/system"


def systemctl(environ: Mapping[str, str] | None = None) -> str | None:
    """systemctl's path when systemd runs here (as install.sh decides), else None."""
    env = os.environ if environ is None else environ
    if env.get(NO_SYSTEMD_ENV) == "1":
        return None
    run_dir = env.get(SYSTEMD_RUN_DIR_ENV) or SYSTEMD_RUN_DIR
    return shutil.which("systemctl", path=env.get("PATH")) if os.path.isdir(run_dir) else None


@dataclass(frozen=True)
class Layout:
    """install.sh's paths under ``prefix`` (BACKUP_AGENT_PREFIX; empty for /)."""

    prefix: str = ""

    def _at(self, path: str) -> Path:
        return Path(self.prefix + path)

    @property
    def lib_dir(self) -> Path:
        return self._at(LOCAL_LIB)

    @property
    def pyz(self) -> Path:
        return self.lib_dir / PYZ_NAME

    @property
    def bin(self) -> Path:
        return self._at(LOCAL_BIN)

    @property
    def unit(self) -> Path:
        return self._at(LOCAL_UNIT)

    @property
    def config_dir(self) -> Path:
        return self._at(CONFIG_DIR)

    @property
    def state_dir(self) -> Path:
        return self._at(STATE_DIR)

    @property
    def deb_markers(self) -> tuple[Path, ...]:
        return (self._at(DPKG_LIST), self._at(DEB_PYZ))


def layout_from_env(environ: Mapping[str, str] | None = None) -> Layout:
    env = os.environ if environ is None else environ
    return Layout(env.get(PREFIX_ENV, "").rstrip("/"))

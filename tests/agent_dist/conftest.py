"""The agent's distributions, built for real once per session (agent_dist/build.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent_dist import build


def require(tool: str) -> str:
    """Fail, never skip: `make test` installs these (the Makefile's agent-tools target)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: `make agent-tools` installs it (dpkg-dev, shellcheck)")
    return path


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The wheel, backup-agent.pyz (+ .sha256) and the .deb, as `make agent-dist` writes them."""
    require("dpkg-deb")
    return build.build_all(tmp_path_factory.mktemp("dist-agent"))


@pytest.fixture(scope="session")
def portal_dist_dir(tmp_path_factory) -> Path:
    """Where the portal builds the agent it serves (PORTAL_AGENT_DIST_DIR): once per session."""
    return tmp_path_factory.mktemp("portal-agent")


@pytest.fixture(autouse=True)
def agent_dist_dir(settings, portal_dist_dir) -> Path:
    settings.PORTAL_AGENT_DIST_DIR = portal_dist_dir
    return portal_dist_dir
